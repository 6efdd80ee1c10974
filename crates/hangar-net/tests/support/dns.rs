//! A DNS server on loopback for the resolver's tests and benchmark: it answers A queries
//! with one address and a chosen TTL, AAAA queries with no records, fails or drops queries
//! on demand, and counts every query it receives.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hangar_net::{ResolverSettings, SystemResolver};
use hickory_resolver::proto::op::{Message, MessageType, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, SOA};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};

/// What the server does with one query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reply {
    Answer,
    ServFail,
    NxDomain,
    Drop,
}

pub struct FakeDns {
    pub addr: SocketAddr,
    queries: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
    dir: tempfile::TempDir,
}

impl FakeDns {
    /// Serves `ip` with `ttl` (also the negative TTL of its SOA); `plan` gets each query's
    /// number (from 0) and type.
    pub async fn start(
        ip: Ipv4Addr,
        ttl: u32,
        plan: impl Fn(usize, RecordType) -> Reply + Send + 'static,
    ) -> FakeDns {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let queries = Arc::new(AtomicUsize::new(0));
        let counted = queries.clone();
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let Some(q) = query.queries().first().cloned() else {
                    continue;
                };
                let reply = plan(counted.fetch_add(1, Ordering::SeqCst), q.query_type());
                let mut m = Message::new();
                m.set_id(query.id())
                    .set_message_type(MessageType::Response)
                    .set_op_code(query.op_code())
                    .set_recursion_desired(true)
                    .set_recursion_available(true)
                    .add_query(q.clone());
                let soa = || {
                    let zone = Name::from_ascii("test.").unwrap();
                    let soa = SOA::new(zone.clone(), zone.clone(), 1, 60, 60, 60, ttl);
                    Record::from_rdata(zone, ttl, RData::SOA(soa))
                };
                match reply {
                    Reply::Drop => continue,
                    Reply::ServFail => {
                        m.set_response_code(ResponseCode::ServFail);
                    }
                    Reply::NxDomain => {
                        m.set_response_code(ResponseCode::NXDomain)
                            .add_name_server(soa());
                    }
                    Reply::Answer if q.query_type() == RecordType::A => {
                        m.add_answer(Record::from_rdata(q.name().clone(), ttl, RData::A(A(ip))));
                    }
                    Reply::Answer => {
                        m.add_name_server(soa());
                    }
                }
                let _ = socket.send_to(&m.to_vec().unwrap(), from).await;
            }
        });
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("resolv.conf"),
            "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("hosts"), "").unwrap();
        FakeDns {
            addr,
            queries,
            task,
            dir,
        }
    }

    pub fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }

    /// The hosts file the resolver reads (empty until a test writes it).
    pub fn hosts(&self) -> PathBuf {
        self.dir.path().join("hosts")
    }

    /// Settings for a resolver that asks only this server.
    pub fn settings(&self, pauses: &[Duration]) -> ResolverSettings {
        ResolverSettings {
            resolv_conf: self.dir.path().join("resolv.conf"),
            hosts: self.hosts(),
            port: self.addr.port(),
            pauses: pauses.to_vec(),
        }
    }

    pub fn resolver(&self, pauses: &[Duration]) -> SystemResolver {
        SystemResolver::new(self.settings(pauses))
    }
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}
