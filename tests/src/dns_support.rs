//! A real DNS server on loopback UDP for client-side balancing tests: it answers `A` queries for
//! the names it knows with the addresses the test sets (as a headless Service's name answers with its
//! ready pods), and counts the queries so a test can wait for a client to re-resolve.

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use hickory_proto::{
    op::{Message, MessageType, ResponseCode},
    rr::{Name, RData, Record, RecordType, rdata::A},
};
use tokio::net::UdpSocket;

/// The server; it stops when dropped.
#[derive(Debug)]
pub struct DnsServer {
    addr: SocketAddr,
    answers: Arc<Mutex<Zone>>,
    queries: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

type Zone = HashMap<Name, Vec<Ipv4Addr>>;

fn name(name: &str) -> Name {
    Name::from_ascii(name).expect("DNS name")
}

impl DnsServer {
    /// Serves each fully qualified name (like `catalog.backbone.test.`) with its addresses;
    /// other names get NXDOMAIN.
    pub async fn start(zone: &[(&str, &[Ipv4Addr])]) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind DNS port");
        let addr = socket.local_addr().expect("DNS address");
        let zone = zone
            .iter()
            .map(|(host, addresses)| (name(host), addresses.to_vec()))
            .collect();
        let answers = Arc::new(Mutex::new(zone));
        let queries = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(serve(socket, answers.clone(), queries.clone()));
        Self {
            addr,
            answers,
            queries,
            task,
        }
    }

    /// Where it listens (`--peer-dns-server`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answers `host` with `addresses` from now on.
    pub fn set(&self, host: &str, addresses: &[Ipv4Addr]) {
        self.answers
            .lock()
            .expect("answers")
            .insert(name(host), addresses.to_vec());
    }

    /// How many queries it has answered.
    pub fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(socket: UdpSocket, answers: Arc<Mutex<Zone>>, queries: Arc<AtomicUsize>) {
    let mut buffer = vec![0u8; 4096];
    loop {
        let Ok((len, from)) = socket.recv_from(&mut buffer).await else {
            return;
        };
        let Ok(query) = Message::from_vec(&buffer[..len]) else {
            continue;
        };
        let mut response = Message::new();
        response
            .set_id(query.id())
            .set_message_type(MessageType::Response)
            .set_op_code(query.op_code())
            .set_recursion_desired(query.recursion_desired())
            .set_recursion_available(true)
            .set_authoritative(true)
            .add_queries(query.queries().to_vec());
        for question in query.queries() {
            let zone = answers.lock().expect("answers");
            match zone.get(question.name()) {
                None => {
                    response.set_response_code(ResponseCode::NXDomain);
                }
                Some(addresses) if question.query_type() == RecordType::A => {
                    for ip in addresses {
                        let record = RData::A(A(*ip));
                        response.add_answer(Record::from_rdata(question.name().clone(), 1, record));
                    }
                }
                Some(_) => {}
            }
        }
        queries.fetch_add(1, Ordering::SeqCst);
        if let Ok(bytes) = response.to_vec() {
            let _ = socket.send_to(&bytes, from).await;
        }
    }
}
