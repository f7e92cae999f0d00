//! The simulated network: one connection per (proposer, acceptor) pair at most, each a pair
//! of FIFO queues of encoded protocol messages.
//!
//! * A connection is created when a proposer's connect attempt completes, and destroyed
//!   when it breaks (randomly, by an acceptor error, a crash, or a proposer giving up);
//!   destroying it drops whatever was queued in both directions, like a reset TCP
//!   connection. A reconnect is a new connection, on which the protocol restarts from the
//!   greeting.
//! * A *partition* blocks a pair until a heal time: nothing is delivered on its connection
//!   (the proposer's keepalive timeout notices) and connect attempts fail.
//! * Loss (a message silently dropped) and reordering (two neighbouring messages swapped)
//!   are applied by the world to one queue at a time; on a real TCP connection they would
//!   be a broken connection, and the protocol must survive either way.
//!
//! Everything is kept in `BTreeMap`s so that iteration order, and so the whole run, depends
//! only on the seed.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

/// A (proposer index, acceptor index) pair.
pub type Pair = (usize, usize);

/// One connection.
#[derive(Debug, Default)]
pub struct Link {
    /// Proposer → acceptor.
    pub to_acc: VecDeque<Bytes>,
    /// Acceptor → proposer.
    pub to_prop: VecDeque<Bytes>,
    /// The acceptor processed appends on this connection since its last flush: the next
    /// flush answers with one AppendResponse here (as the server's WAL-push thread does).
    pub need_flush: bool,
}

impl Link {
    /// The queue in direction `to_acc`.
    pub fn queue(&mut self, to_acc: bool) -> &mut VecDeque<Bytes> {
        if to_acc {
            &mut self.to_acc
        } else {
            &mut self.to_prop
        }
    }
}

/// All connections and partitions.
#[derive(Debug, Default)]
pub struct Network {
    /// Live connections.
    pub links: BTreeMap<Pair, Link>,
    /// Blocked pairs and the virtual time (ms) at which they heal.
    pub blocked: BTreeMap<Pair, u64>,
}

impl Network {
    /// Opens a new connection for `pair`, replacing any old one.
    pub fn connect(&mut self, pair: Pair) {
        self.links.insert(pair, Link::default());
    }

    /// Destroys the connection; returns whether there was one.
    pub fn break_link(&mut self, pair: Pair) -> bool {
        self.links.remove(&pair).is_some()
    }

    /// The proposers connected to acceptor `a`.
    pub fn proposers_of(&self, a: usize) -> Vec<usize> {
        self.links
            .keys()
            .filter(|(_, la)| *la == a)
            .map(|(p, _)| *p)
            .collect()
    }

    /// The acceptors connected to proposer `p`.
    pub fn acceptors_of(&self, p: usize) -> Vec<usize> {
        self.links
            .keys()
            .filter(|(lp, _)| *lp == p)
            .map(|(_, a)| *a)
            .collect()
    }

    /// Whether `pair` is partitioned at `now_ms`.
    pub fn is_blocked(&self, pair: Pair, now_ms: u64) -> bool {
        self.blocked.get(&pair).is_some_and(|&heal| heal > now_ms)
    }

    /// Forgets partitions that have healed by `now_ms`.
    pub fn heal(&mut self, now_ms: u64) {
        self.blocked.retain(|_, heal| *heal > now_ms);
    }
}
