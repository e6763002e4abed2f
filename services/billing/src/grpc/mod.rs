//! gRPC handlers of `backbone.billing.v1.BillingService`: decode, identify the caller and the
//! idempotency key, call the use case, encode. Every RPC needs a token.

use backbone_common::{auth::principal, client::incoming_deadline};
use backbone_proto::billing::{self as pb, billing_service_server::BillingService};
use prost::Message as _;
use tonic::{Request, Response, Status};

use crate::{
    db::carts::CartChange,
    domain::{InvoiceStatus, LedgerAccount, OrderStatus},
    error::BillingError,
    service::{Billing, Caller, RequestKey, checkout::CheckoutRequest, orders::ListRequest},
};

/// The handlers over billing's use cases.
#[derive(Debug, Clone)]
pub struct BillingApi {
    billing: Billing,
}

impl BillingApi {
    /// Handlers over `billing`.
    pub fn new(billing: Billing) -> Self {
        Self { billing }
    }
}

type Answer<T> = Result<Response<T>, Status>;

fn caller<T>(request: &Request<T>) -> Result<Caller, Status> {
    Ok(Caller {
        principal: principal(request)?,
        deadline: incoming_deadline(request.metadata()),
    })
}

/// The idempotency key from the field or the `idempotency-key` metadata (equal if both), and
/// the request's fingerprint (the message without its key).
fn request_key<T>(
    request: &Request<T>,
    field: &str,
    operation: &str,
    without_key: &[u8],
    required: bool,
) -> Result<Option<RequestKey>, Status> {
    let header = request
        .metadata()
        .get("idempotency-key")
        .map(|v| v.to_str().map(str::to_owned))
        .transpose()
        .map_err(|_| BillingError::field("request_id", "idempotency-key metadata must be text"))?;
    let key = match (field.is_empty(), header) {
        (true, None) if required => {
            return Err(BillingError::field(
                "request_id",
                "is required (or send idempotency-key metadata)",
            )
            .into());
        }
        (true, None) => return Ok(None),
        (true, Some(header)) => header,
        (false, Some(header)) if header != field => {
            return Err(BillingError::field(
                "request_id",
                "differs from the idempotency-key metadata",
            )
            .into());
        }
        (false, _) => field.to_owned(),
    };
    Ok(Some(RequestKey::new(&key, operation, without_key)?))
}

fn order_status(value: i32) -> Result<Option<&'static str>, Status> {
    let status = match pb::OrderStatus::try_from(value) {
        Ok(pb::OrderStatus::Unspecified) => return Ok(None),
        Ok(pb::OrderStatus::Pending) => OrderStatus::Pending,
        Ok(pb::OrderStatus::PaymentPending) => OrderStatus::PaymentPending,
        Ok(pb::OrderStatus::Paid) => OrderStatus::Paid,
        Ok(pb::OrderStatus::PaymentFailed) => OrderStatus::PaymentFailed,
        Ok(pb::OrderStatus::Cancelled) => OrderStatus::Cancelled,
        Ok(pb::OrderStatus::PartiallyRefunded) => OrderStatus::PartiallyRefunded,
        Ok(pb::OrderStatus::Refunded) => OrderStatus::Refunded,
        Err(_) => return Err(BillingError::field("status", "is not a known status").into()),
    };
    Ok(Some(status.as_str()))
}

fn invoice_status(value: i32) -> Result<Option<&'static str>, Status> {
    let status = match pb::InvoiceStatus::try_from(value) {
        Ok(pb::InvoiceStatus::Unspecified) => return Ok(None),
        Ok(pb::InvoiceStatus::Open) => InvoiceStatus::Open,
        Ok(pb::InvoiceStatus::Paid) => InvoiceStatus::Paid,
        Ok(pb::InvoiceStatus::PartiallyRefunded) => InvoiceStatus::PartiallyRefunded,
        Ok(pb::InvoiceStatus::Refunded) => InvoiceStatus::Refunded,
        Ok(pb::InvoiceStatus::Void) => InvoiceStatus::Void,
        Err(_) => return Err(BillingError::field("status", "is not a known status").into()),
    };
    Ok(Some(status.as_str()))
}

impl BillingApi {
    async fn cart_change<T>(
        &self,
        request: &Request<T>,
        field_key: &str,
        without_key: &[u8],
        change: CartChange,
    ) -> Result<pb::Cart, Status> {
        let caller = caller(request)?;
        let key = request_key(request, field_key, "cart", without_key, false)?;
        self.billing.change_cart(&caller, change, key).await
    }
}

#[tonic::async_trait]
impl BillingService for BillingApi {
    async fn get_cart(&self, request: Request<pb::GetCartRequest>) -> Answer<pb::GetCartResponse> {
        let caller = caller(&request)?;
        let cart = self.billing.cart(&caller).await?;
        Ok(Response::new(pb::GetCartResponse { cart: Some(cart) }))
    }

    async fn add_cart_item(
        &self,
        request: Request<pb::AddCartItemRequest>,
    ) -> Answer<pb::AddCartItemResponse> {
        let body = request.get_ref().clone();
        let fingerprint = pb::AddCartItemRequest {
            request_id: String::new(),
            ..body.clone()
        }
        .encode_to_vec();
        let mut tagged = b"add".to_vec();
        tagged.extend(fingerprint);
        let change = CartChange::Add {
            product_id: body.product_id,
            quantity: body.quantity,
        };
        let cart = self
            .cart_change(&request, &body.request_id, &tagged, change)
            .await?;
        Ok(Response::new(pb::AddCartItemResponse { cart: Some(cart) }))
    }

    async fn update_cart_item(
        &self,
        request: Request<pb::UpdateCartItemRequest>,
    ) -> Answer<pb::UpdateCartItemResponse> {
        let body = request.get_ref().clone();
        let mut tagged = b"update".to_vec();
        tagged.extend(
            pb::UpdateCartItemRequest {
                request_id: String::new(),
                ..body.clone()
            }
            .encode_to_vec(),
        );
        let change = CartChange::Set {
            product_id: body.product_id,
            quantity: body.quantity,
        };
        let cart = self
            .cart_change(&request, &body.request_id, &tagged, change)
            .await?;
        Ok(Response::new(pb::UpdateCartItemResponse {
            cart: Some(cart),
        }))
    }

    async fn remove_cart_item(
        &self,
        request: Request<pb::RemoveCartItemRequest>,
    ) -> Answer<pb::RemoveCartItemResponse> {
        let body = request.get_ref().clone();
        let mut tagged = b"remove".to_vec();
        tagged.extend(
            pb::RemoveCartItemRequest {
                request_id: String::new(),
                ..body.clone()
            }
            .encode_to_vec(),
        );
        let change = CartChange::Remove {
            product_id: body.product_id,
        };
        let cart = self
            .cart_change(&request, &body.request_id, &tagged, change)
            .await?;
        Ok(Response::new(pb::RemoveCartItemResponse {
            cart: Some(cart),
        }))
    }

    async fn clear_cart(
        &self,
        request: Request<pb::ClearCartRequest>,
    ) -> Answer<pb::ClearCartResponse> {
        let key = request.get_ref().request_id.clone();
        let cart = self
            .cart_change(&request, &key, b"clear", CartChange::Clear)
            .await?;
        Ok(Response::new(pb::ClearCartResponse { cart: Some(cart) }))
    }

    async fn checkout(
        &self,
        request: Request<pb::CheckoutRequest>,
    ) -> Answer<pb::CheckoutResponse> {
        let caller = caller(&request)?;
        let body = request.get_ref().clone();
        let fingerprint = pb::CheckoutRequest {
            request_id: String::new(),
            ..body.clone()
        }
        .encode_to_vec();
        let key = request_key(&request, &body.request_id, "checkout", &fingerprint, true)?
            .ok_or_else(|| Status::from(BillingError::field("request_id", "is required")))?;
        let checkout = CheckoutRequest::new(body.payment_method_token, &body.items)?;
        Ok(Response::new(
            self.billing.checkout(&caller, checkout, key).await?,
        ))
    }

    async fn get_order(
        &self,
        request: Request<pb::GetOrderRequest>,
    ) -> Answer<pb::GetOrderResponse> {
        let caller = caller(&request)?;
        let order = self
            .billing
            .order(&caller, &request.get_ref().order_id)
            .await?;
        Ok(Response::new(pb::GetOrderResponse { order: Some(order) }))
    }

    async fn list_orders(
        &self,
        request: Request<pb::ListOrdersRequest>,
    ) -> Answer<pb::ListOrdersResponse> {
        let caller = caller(&request)?;
        let body = request.into_inner();
        let list = ListRequest {
            page_size: body.page_size,
            page_token: body.page_token,
            status: order_status(body.status)?,
            customer_id: body.customer_id,
        };
        let (orders, next_page_token) = self.billing.orders(&caller, &list).await?;
        Ok(Response::new(pb::ListOrdersResponse {
            orders,
            next_page_token,
        }))
    }

    async fn cancel_order(
        &self,
        request: Request<pb::CancelOrderRequest>,
    ) -> Answer<pb::CancelOrderResponse> {
        let caller = caller(&request)?;
        let body = request.get_ref().clone();
        let fingerprint = pb::CancelOrderRequest {
            request_id: String::new(),
            ..body.clone()
        }
        .encode_to_vec();
        let key = request_key(&request, &body.request_id, "cancel", &fingerprint, false)?;
        let order = self
            .billing
            .cancel_order(&caller, &body.order_id, key)
            .await?;
        Ok(Response::new(pb::CancelOrderResponse {
            order: Some(order),
        }))
    }

    async fn get_invoice(
        &self,
        request: Request<pb::GetInvoiceRequest>,
    ) -> Answer<pb::GetInvoiceResponse> {
        let caller = caller(&request)?;
        let invoice = self
            .billing
            .invoice(&caller, &request.get_ref().invoice_id)
            .await?;
        Ok(Response::new(pb::GetInvoiceResponse {
            invoice: Some(invoice),
        }))
    }

    async fn list_invoices(
        &self,
        request: Request<pb::ListInvoicesRequest>,
    ) -> Answer<pb::ListInvoicesResponse> {
        let caller = caller(&request)?;
        let body = request.into_inner();
        let list = ListRequest {
            page_size: body.page_size,
            page_token: body.page_token,
            status: invoice_status(body.status)?,
            customer_id: body.customer_id,
        };
        let (invoices, next_page_token) = self.billing.invoices(&caller, &list).await?;
        Ok(Response::new(pb::ListInvoicesResponse {
            invoices,
            next_page_token,
        }))
    }

    async fn refund_payment(
        &self,
        request: Request<pb::RefundPaymentRequest>,
    ) -> Answer<pb::RefundPaymentResponse> {
        let caller = caller(&request)?;
        let body = request.get_ref().clone();
        let fingerprint = pb::RefundPaymentRequest {
            request_id: String::new(),
            ..body.clone()
        }
        .encode_to_vec();
        let key = request_key(&request, &body.request_id, "refund", &fingerprint, true)?
            .ok_or_else(|| Status::from(BillingError::field("request_id", "is required")))?;
        Ok(Response::new(
            self.billing
                .refund(&caller, &body.order_id, body.amount, &body.reason, key)
                .await?,
        ))
    }

    async fn get_ledger(
        &self,
        request: Request<pb::GetLedgerRequest>,
    ) -> Answer<pb::GetLedgerResponse> {
        let caller = caller(&request)?;
        let body = request.into_inner();
        let account = match pb::LedgerAccount::try_from(body.account) {
            Ok(pb::LedgerAccount::Unspecified) => None,
            Ok(pb::LedgerAccount::Customer) => Some(LedgerAccount::Customer),
            Ok(pb::LedgerAccount::GatewayClearing) => Some(LedgerAccount::GatewayClearing),
            Ok(pb::LedgerAccount::Revenue) => Some(LedgerAccount::Revenue),
            Ok(pb::LedgerAccount::Refunds) => Some(LedgerAccount::Refunds),
            Err(_) => return Err(BillingError::field("account", "is not a known account").into()),
        };
        let (entries, next_page_token) = self
            .billing
            .ledger(
                &caller,
                &body.order_id,
                account,
                &body.customer_id,
                body.page_size,
                &body.page_token,
            )
            .await?;
        Ok(Response::new(pb::GetLedgerResponse {
            entries,
            next_page_token,
        }))
    }

    async fn check_ledger(
        &self,
        request: Request<pb::CheckLedgerRequest>,
    ) -> Answer<pb::CheckLedgerResponse> {
        let caller = caller(&request)?;
        Ok(Response::new(self.billing.check_ledger(&caller).await?))
    }

    async fn list_events(
        &self,
        request: Request<pb::ListEventsRequest>,
    ) -> Answer<pb::ListEventsResponse> {
        let caller = caller(&request)?;
        let body = request.into_inner();
        Ok(Response::new(
            self.billing
                .events(
                    &caller,
                    &body.types,
                    &body.subject_id,
                    body.page_size,
                    &body.page_token,
                )
                .await?,
        ))
    }
}
