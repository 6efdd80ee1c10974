//! Idle upstream TLS connections of one proxy's intercepted connections, kept for the
//! next client connection to the same host, port and checked address in the same policy
//! generation: a new TLS handshake toward the server is most of what interception costs.
//!
//! What keeps a pooled connection from carrying traffic it must not: the key is the TLS
//! server name (the CONNECT host), the port and the address connected to, so a connection
//! serves only the host it was verified for, at an address the taking request checked
//! itself; the pool holds one generation, and a new one (`Proxy::set_policy`) empties it
//! and refuses connections given back by an older one (their tasks end with it anyway).
//! A connection is idle here only between two client connections, never shared by two.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hyper::client::conn::http1::SendRequest;

use crate::proxy::Body;

/// How long a connection stays idle here. Shorter than most servers' own keep-alive, so
/// one is rarely taken just as its server closes it.
pub(crate) const IDLE: Duration = Duration::from_secs(4);

/// Idle connections per key: what a client opening a few connections at once reuses.
const PER_KEY: usize = 8;

/// Which connections may serve a request: the same server name, port and address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub host: String,
    pub port: u16,
    pub addr: SocketAddr,
}

struct Idle {
    id: u64,
    since: Instant,
    sender: SendRequest<Body>,
}

#[derive(Default)]
struct State {
    generation: u64,
    next_id: u64,
    idle: HashMap<Key, Vec<Idle>>,
}

/// One proxy's idle upstream connections.
#[derive(Default)]
pub(crate) struct Pool {
    state: Mutex<State>,
}

impl Pool {
    /// An idle connection of `generation` to `host:port` at the first of `addrs` (each
    /// checked by the caller) that has one, with the address.
    pub fn take(
        &self,
        generation: u64,
        host: &str,
        port: u16,
        addrs: &[IpAddr],
    ) -> Option<(SocketAddr, SendRequest<Body>)> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.generation != generation {
            return None;
        }
        for ip in addrs {
            let key = Key {
                host: host.to_string(),
                port,
                addr: SocketAddr::new(*ip, port),
            };
            let Some(list) = state.idle.get_mut(&key) else {
                continue;
            };
            // Newest first: the one least likely to have been closed by its server.
            while let Some(idle) = list.pop() {
                if idle.since.elapsed() < IDLE && idle.sender.is_ready() && !idle.sender.is_closed()
                {
                    if list.is_empty() {
                        state.idle.remove(&key);
                    }
                    return Some((key.addr, idle.sender));
                }
            }
            state.idle.remove(&key);
        }
        None
    }

    /// Keeps `sender` (ready for a request) for `key`; its id, for [`Pool::expire`], or
    /// `None` when it was not kept (another generation's, or enough idle already).
    pub fn put(&self, generation: u64, key: Key, sender: SendRequest<Body>) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.generation != generation {
            return None;
        }
        state.next_id += 1;
        let id = state.next_id;
        let list = state.idle.entry(key).or_default();
        if list.len() >= PER_KEY {
            return None;
        }
        list.push(Idle {
            id,
            since: Instant::now(),
            sender,
        });
        Some(id)
    }

    /// Drops the connection `put` kept as `id`, if it is still idle; closing it.
    pub fn expire(&self, key: &Key, id: u64) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(list) = state.idle.get_mut(key) {
            list.retain(|i| i.id != id);
            if list.is_empty() {
                state.idle.remove(key);
            }
        }
    }

    /// Starts `generation`: every idle connection goes, and only this generation's are
    /// kept or handed out from now on.
    pub fn new_generation(&self, generation: u64) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.generation = generation;
        state.idle.clear();
    }
}
