//! Answers encoded once and sent many times.
//!
//! A unary method whose answer is one embedded message the service keeps cached (catalog's
//! GetProduct) can keep that message's protobuf bytes beside the cached value and send them as
//! they are, instead of building the generated answer (a copy of every string, list and map)
//! and encoding it again on every call. [`EncodedField`] is such an answer, and [`UnaryRoute`]
//! serves one method with it through tonic's own unary handling (the same codec, message size
//! limits, compression negotiation and status mapping as a generated server), mounted in front
//! of the generated service for that one path. Clients see the same bytes either way.

use std::{
    convert::Infallible,
    future::Future,
    marker::PhantomData,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::{Buf, BufMut, Bytes};
use prost::{
    DecodeError, Message,
    encoding::{self, DecodeContext, WireType},
};
use tonic::{Request, Response, Status, body::Body, server::Grpc};

/// A message whose one field, number `TAG`, is an embedded message kept encoded: it encodes to
/// the bytes of the generated message with that field set (`GetProductResponse { product }` is
/// `EncodedField<1>` holding the product's encoding). The field is always present.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EncodedField<const TAG: u32> {
    /// The embedded message's encoding (without tag or length).
    pub bytes: Bytes,
}

impl<const TAG: u32> EncodedField<TAG> {
    /// The message with `bytes` as field `TAG`'s embedded message.
    pub fn new(bytes: Bytes) -> Self {
        Self { bytes }
    }
}

impl<const TAG: u32> Message for EncodedField<TAG> {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        encoding::encode_key(TAG, WireType::LengthDelimited, buf);
        encoding::encode_varint(self.bytes.len() as u64, buf);
        buf.put_slice(&self.bytes);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        if tag != TAG {
            return encoding::skip_field(wire_type, tag, buf, ctx);
        }
        let mut more = Bytes::new();
        encoding::bytes::merge(wire_type, &mut more, buf, ctx)?;
        // A message field sent twice is merged, and concatenated encodings merge the same way.
        self.bytes = if self.bytes.is_empty() {
            more
        } else {
            [self.bytes.as_ref(), more.as_ref()].concat().into()
        };
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        encoding::key_len(TAG)
            + encoding::encoded_len_varint(self.bytes.len() as u64)
            + self.bytes.len()
    }

    fn clear(&mut self) {
        self.bytes.clear();
    }
}

/// One unary method served by `handler` (a request in, an answer of type `Res` out), through
/// tonic's unary handling with the prost codec. Mount it on the method's path
/// (`/package.Service/Method`) in front of the generated service:
/// `Routes::from(Routes::new(server).into_axum_router().route_service(path, route))`.
pub struct UnaryRoute<Req, Res, H> {
    handler: H,
    messages: PhantomData<fn(Req) -> Res>,
}

impl<Req, Res, H> std::fmt::Debug for UnaryRoute<Req, Res, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnaryRoute").finish_non_exhaustive()
    }
}

impl<Req, Res, H: Clone> Clone for UnaryRoute<Req, Res, H> {
    fn clone(&self) -> Self {
        Self {
            handler: self.handler.clone(),
            messages: PhantomData,
        }
    }
}

impl<Req, Res, H, F> UnaryRoute<Req, Res, H>
where
    H: FnMut(Request<Req>) -> F,
    F: Future<Output = Result<Response<Res>, Status>>,
{
    /// The method served by `handler`.
    pub fn new(handler: H) -> Self {
        Self {
            handler,
            messages: PhantomData,
        }
    }
}

impl<Req, Res, H, F, B> tower::Service<http::Request<B>> for UnaryRoute<Req, Res, H>
where
    Req: Message + Default + Send + 'static,
    Res: Message + Send + 'static,
    H: FnMut(Request<Req>) -> F + Clone + Send + 'static,
    F: Future<Output = Result<Response<Res>, Status>> + Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<tower::BoxError> + Send,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let handler = self.handler.clone();
        Box::pin(async move {
            let mut grpc = Grpc::new(tonic_prost::ProstCodec::<Res, Req>::default());
            Ok(grpc.unary(tower::service_fn(handler), request).await)
        })
    }
}

#[cfg(test)]
mod tests {
    use prost_types::Duration;

    use super::*;

    /// A generated message with an embedded message as field 2, for comparison.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Holder {
        #[prost(string, tag = "1")]
        name: String,
        #[prost(message, optional, tag = "2")]
        duration: Option<Duration>,
    }

    #[test]
    fn an_encoded_field_encodes_and_decodes_like_the_generated_message() {
        let duration = Duration {
            seconds: 300,
            nanos: 7,
        };
        let generated = Holder {
            name: String::new(),
            duration: Some(duration),
        };
        let encoded = EncodedField::<2>::new(duration.encode_to_vec().into());
        assert_eq!(encoded.encode_to_vec(), generated.encode_to_vec());
        assert_eq!(encoded.encoded_len(), generated.encoded_len());
        let empty = EncodedField::<2>::default().encode_to_vec();
        assert_eq!(
            empty,
            Holder {
                name: String::new(),
                duration: Some(Duration::default())
            }
            .encode_to_vec()
        );

        // Decoding keeps field 2's bytes and skips the others; a repeated field merges.
        let with_name = Holder {
            name: "n".into(),
            duration: Some(duration),
        };
        let decoded =
            EncodedField::<2>::decode(with_name.encode_to_vec().as_slice()).expect("decode");
        assert_eq!(
            Duration::decode(decoded.bytes.clone()).expect("inner"),
            duration
        );
        let mut twice = generated.encode_to_vec();
        twice.extend(
            Holder {
                name: String::new(),
                duration: Some(Duration {
                    seconds: 0,
                    nanos: 9,
                }),
            }
            .encode_to_vec(),
        );
        let merged = EncodedField::<2>::decode(twice.as_slice()).expect("decode");
        assert_eq!(
            Duration::decode(merged.bytes).expect("inner"),
            Duration {
                seconds: 300,
                nanos: 9
            }
        );
        let wrong_type = [0x10, 0x01]; // field 2 as a varint
        assert!(EncodedField::<2>::decode(wrong_type.as_slice()).is_err());
    }
}
