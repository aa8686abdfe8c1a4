//! One listening TCP port: the sockets waiting for a SYN, the connections
//! still in their handshake (half-open), and the accept queue.
//!
//! smoltcp has no listen backlog and no SYN cookies: a socket in LISTEN
//! takes the first SYN that arrives and stays in SYN-RECEIVED for as long
//! as the peer stays silent, which a spoofed source always does. So the
//! port's state is bounded here, as Linux bounds its SYN and accept
//! queues:
//!
//! - a few sockets wait in LISTEN ([`Limits::spare`]) in each socket set
//!   (a SYN is handed to smoltcp with its connection's set only), topped
//!   up after every SYN, so that the next SYN always finds one;
//! - at most [`Limits::max_half_open`] connections are in their handshake;
//!   past that the oldest one still in SYN-RECEIVED is forgotten without a
//!   word (its peer is most likely forged), or, when all are younger than
//!   their peer needs to answer (four times the smoothed time real
//!   handshakes took on this port, at most [`Limits::evictable_after`]),
//!   the newest SYN is dropped (a real client retransmits it); none is
//!   older than [`Limits::syn_timeout`];
//! - connections whose handshake completed wait in the accept queue, at
//!   most [`Limits::backlog`] of them and for at most
//!   [`Limits::accept_timeout`]; a completed connection finding the queue
//!   full waits among the half-open ones (the client's data is buffered)
//!   until there is room;
//! - when the caller says memory is short, a new connection is refused
//!   with a reset.
//!
//! Every decision is counted in [`Events`]. The policy reaches the sockets
//! only through [`Table`], so it is unit-tested on the host against a
//! table of states.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use smoltcp::socket::tcp::State;

use super::NetError;

/// A port's bounds; times are in ticks of the caller's clock.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Sockets kept in LISTEN, in each socket set.
    pub spare: usize,
    /// Connections in their handshake, or done but not yet queued.
    pub max_half_open: usize,
    /// How long a connection may stay in SYN-RECEIVED.
    pub syn_timeout: u64,
    /// The longest a SYN-RECEIVED connection is spared from eviction (its
    /// peer's ACK may be on its way); once handshakes have completed, four
    /// times their smoothed duration, but not under 1/10 of this.
    pub evictable_after: u64,
    /// The accept queue's length.
    pub backlog: usize,
    /// How long a connection may wait in the accept queue.
    pub accept_timeout: u64,
}

/// What the listener needs from the socket table.
pub trait Table {
    type Handle: Copy + PartialEq + core::fmt::Debug;
    fn state(&self, handle: Self::Handle) -> State;
    /// How many socket sets there are.
    fn sets(&self) -> usize;
    /// The set a socket is in.
    fn set_of(&self, handle: Self::Handle) -> usize;
    /// A new socket in LISTEN on `port`, in `set`.
    fn listen(&mut self, port: u16, set: usize) -> Result<Self::Handle, NetError>;
    /// Frees a socket without sending anything (a half-open connection,
    /// most likely from a forged address, or one already closed).
    fn forget(&mut self, handle: Self::Handle);
    /// Resets the connection (RST) and frees its socket once that is sent.
    fn refuse(&mut self, handle: Self::Handle);
}

/// What one [`Listener::update`] did, for the stack's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Events {
    /// New connections reset: memory short, or every handshake slot held
    /// by completed connections waiting for the accept queue.
    pub refused: u64,
    /// Half-open connections forgotten for lack of room (the oldest, or a
    /// new SYN while all are young).
    pub evicted: u64,
    /// Connections dropped for staying too long in SYN-RECEIVED or in the
    /// accept queue.
    pub timed_out: u64,
}

impl core::ops::AddAssign for Events {
    fn add_assign(&mut self, other: Events) {
        self.refused += other.refused;
        self.evicted += other.evicted;
        self.timed_out += other.timed_out;
    }
}

/// Whether a passive connection's handshake is over (it can be read or
/// written): the peer's ACK arrived, maybe with its FIN already.
fn handshake_done(state: State) -> bool {
    matches!(state, State::Established | State::CloseWait)
}

pub struct Listener<H> {
    pub port: u16,
    limits: Limits,
    /// Sockets in LISTEN.
    listening: Vec<H>,
    /// Connections that left LISTEN and are not queued yet, oldest first,
    /// with the tick at which they were first seen out of LISTEN.
    half_open: VecDeque<(H, u64)>,
    /// Completed connections, oldest first, with the tick they were queued.
    queue: VecDeque<(H, u64)>,
    /// The smoothed duration of this port's completed handshakes, in
    /// ticks (0 before the first).
    handshake: u64,
}

impl<H: Copy + PartialEq + core::fmt::Debug> Listener<H> {
    /// A listener on `port` with one socket already in LISTEN in every
    /// set (so that binding fails early when sockets cannot be made).
    pub fn new<T: Table<Handle = H>>(table: &mut T, port: u16, limits: Limits) -> Result<Self, NetError> {
        let mut listening = Vec::new();
        listening.try_reserve(limits.spare.max(1) * table.sets()).map_err(|_| NetError::NoBufferSpace)?;
        for set in 0..table.sets() {
            match table.listen(port, set) {
                Ok(handle) => listening.push(handle),
                Err(e) => {
                    listening.into_iter().for_each(|h| table.forget(h));
                    return Err(e);
                }
            }
        }
        Ok(Listener { port, limits, listening, half_open: VecDeque::new(), queue: VecDeque::new(), handshake: 0 })
    }

    /// Brings the bookkeeping up to date with the sockets' states at tick
    /// `now` (once per round): new connections move from LISTEN to the
    /// handshake list, completed ones to the accept queue; the bounds are
    /// enforced; LISTEN is topped up. `admit` false refuses every new
    /// connection (memory is short).
    pub fn update<T: Table<Handle = H>>(&mut self, table: &mut T, now: u64, admit: bool) -> Events {
        let mut events = Events::default();
        self.take_syns(table, now, admit, &mut events);
        self.settle_handshakes(table, now, &mut events);
        self.enforce_half_open_limit(table, now, &mut events);
        self.expire_queue(table, now, &mut events);
        self.top_up(table);
        events
    }

    /// What the next SYN needs, after a frame changed a socket: sockets
    /// that took a SYN leave LISTEN and LISTEN is topped up. It looks at
    /// the listening sockets only; the half-open limit waits for the
    /// round's [`update`](Self::update), so it is passed by at most one
    /// round's frames.
    pub fn refill<T: Table<Handle = H>>(&mut self, table: &mut T, now: u64, admit: bool) -> Events {
        let mut events = Events::default();
        self.take_syns(table, now, admit, &mut events);
        self.top_up(table);
        events
    }

    /// Sockets that took a SYN join the handshakes (or are refused).
    fn take_syns<T: Table<Handle = H>>(&mut self, table: &mut T, now: u64, admit: bool, events: &mut Events) {
        let mut i = 0;
        while i < self.listening.len() {
            let handle = self.listening[i];
            match table.state(handle) {
                State::Listen => i += 1,
                State::Closed => {
                    self.listening.swap_remove(i);
                    table.forget(handle);
                }
                _ => {
                    self.listening.swap_remove(i);
                    if admit {
                        self.half_open.push_back((handle, now));
                    } else {
                        table.refuse(handle);
                        events.refused += 1;
                    }
                }
            }
        }
    }

    /// Handshakes: completed ones go to the queue, failed or too old ones
    /// away.
    fn settle_handshakes<T: Table<Handle = H>>(&mut self, table: &mut T, now: u64, events: &mut Events) {
        let mut kept = 0;
        for _ in 0..self.half_open.len() {
            let Some((handle, since)) = self.half_open.pop_front() else { break };
            match table.state(handle) {
                state if handshake_done(state) && self.queue.len() < self.limits.backlog => {
                    self.queue.push_back((handle, now));
                    let took = now.saturating_sub(since).max(1);
                    self.handshake =
                        if self.handshake == 0 { took } else { self.handshake - self.handshake / 8 + took / 8 };
                }
                state if handshake_done(state) => {
                    self.half_open.push_back((handle, since));
                    kept += 1;
                }
                State::SynReceived if now.saturating_sub(since) >= self.limits.syn_timeout => {
                    table.forget(handle);
                    events.timed_out += 1;
                }
                // A reset in SYN-RECEIVED sends smoltcp's socket back to LISTEN.
                State::Listen if self.listening.len() < self.limits.spare * table.sets() => self.listening.push(handle),
                State::SynReceived => {
                    self.half_open.push_back((handle, since));
                    kept += 1;
                }
                _ => table.forget(handle),
            }
        }
        debug_assert_eq!(kept, self.half_open.len());
    }

    /// Too many handshakes. The oldest SYN-RECEIVED goes, if its peer
    /// has had time to answer (a flood's forged SYNs never do); while
    /// every one is young (a burst of real clients) the newest SYN is
    /// dropped instead, before its SYN-ACK leaves, and its client
    /// retransmits. Slots all held by completed connections: the newest
    /// is refused.
    fn enforce_half_open_limit<T: Table<Handle = H>>(&mut self, table: &mut T, now: u64, events: &mut Events) {
        while self.half_open.len() > self.limits.max_half_open {
            let syn_received = |&(h, _): &(H, u64)| table.state(h) == State::SynReceived;
            let victim = match self.half_open.iter().position(syn_received) {
                Some(oldest) if now.saturating_sub(self.half_open[oldest].1) >= self.protection() => Some(oldest),
                Some(_) => self.half_open.iter().rposition(syn_received),
                None => None,
            };
            match victim {
                Some(at) => {
                    let (handle, _) = self.half_open.remove(at).expect("position is in range");
                    table.forget(handle);
                    events.evicted += 1;
                }
                None => {
                    let (handle, _) = self.half_open.pop_back().expect("the list is over its limit");
                    table.refuse(handle);
                    events.refused += 1;
                }
            }
        }
    }

    /// The accept queue: connections reset before they were accepted are
    /// dropped; none waits for ever.
    fn expire_queue<T: Table<Handle = H>>(&mut self, table: &mut T, now: u64, events: &mut Events) {
        let mut i = 0;
        while i < self.queue.len() {
            let (handle, queued) = self.queue[i];
            if table.state(handle) == State::Closed {
                self.queue.remove(i);
                table.forget(handle);
            } else if now.saturating_sub(queued) >= self.limits.accept_timeout {
                self.queue.remove(i);
                table.refuse(handle);
                events.timed_out += 1;
            } else {
                i += 1;
            }
        }
    }

    /// The next SYN must find a socket in LISTEN, whatever its set.
    fn top_up<T: Table<Handle = H>>(&mut self, table: &mut T) {
        if self.listening.len() < self.limits.spare.max(1) * table.sets() {
            for set in 0..table.sets() {
                let listening = self.listening.iter().filter(|&&h| table.set_of(h) == set).count();
                for _ in listening..self.limits.spare.max(1) {
                    match table.listen(self.port, set) {
                        Ok(handle) => self.listening.push(handle),
                        Err(_) => break,
                    }
                }
            }
        }
    }

    /// How long a SYN-RECEIVED connection is spared from eviction.
    fn protection(&self) -> u64 {
        match self.handshake {
            0 => self.limits.evictable_after,
            smoothed => smoothed.saturating_mul(4).clamp(self.limits.evictable_after / 10, self.limits.evictable_after),
        }
    }

    /// Takes the oldest completed connection.
    pub fn accept(&mut self) -> Option<H> {
        self.queue.pop_front().map(|(handle, _)| handle)
    }

    /// Connections waiting in the accept queue.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Connections in their handshake (or done and waiting for room).
    pub fn half_open(&self) -> usize {
        self.half_open.len()
    }

    /// Stops listening: every socket is reset or freed.
    pub fn close<T: Table<Handle = H>>(self, table: &mut T) {
        for handle in self.listening {
            table.forget(handle);
        }
        for (handle, _) in self.half_open.into_iter().chain(self.queue) {
            table.refuse(handle);
        }
    }
}

#[cfg(test)]
mod tests {
    //! The policy against a table of socket states: each test reads as a
    //! rule of the port's bounds.

    use super::*;
    use std::collections::BTreeMap;

    #[derive(Default)]
    struct FakeTable {
        next: u32,
        states: BTreeMap<u32, State>,
        /// The set of each socket; one set unless `sets` says more.
        set_of: BTreeMap<u32, usize>,
        sets: usize,
        forgotten: Vec<u32>,
        refused: Vec<u32>,
        fail_listen: bool,
    }

    impl FakeTable {
        /// The socket in LISTEN that smoltcp would give the next SYN to.
        fn syn(&mut self) -> u32 {
            let h = *self.states.iter().find(|(_, &s)| s == State::Listen).expect("a socket in LISTEN").0;
            self.states.insert(h, State::SynReceived);
            h
        }
        fn set(&mut self, h: u32, state: State) {
            self.states.insert(h, state);
        }
        fn live(&self) -> usize {
            self.states.len()
        }
    }

    impl Table for FakeTable {
        type Handle = u32;
        fn state(&self, h: u32) -> State {
            self.states[&h]
        }
        fn sets(&self) -> usize {
            self.sets.max(1)
        }
        fn set_of(&self, h: u32) -> usize {
            self.set_of[&h]
        }
        fn listen(&mut self, _port: u16, set: usize) -> Result<u32, NetError> {
            if self.fail_listen {
                return Err(NetError::NoBufferSpace);
            }
            self.next += 1;
            self.states.insert(self.next, State::Listen);
            self.set_of.insert(self.next, set);
            Ok(self.next)
        }
        fn forget(&mut self, h: u32) {
            self.states.remove(&h).expect("forgotten once");
            self.forgotten.push(h);
        }
        fn refuse(&mut self, h: u32) {
            self.states.remove(&h).expect("refused once");
            self.refused.push(h);
        }
    }

    const LIMITS: Limits =
        Limits { spare: 2, max_half_open: 4, syn_timeout: 100, evictable_after: 10, backlog: 3, accept_timeout: 1000 };

    fn listener(table: &mut FakeTable) -> Listener<u32> {
        let mut listener = Listener::new(table, 80, LIMITS).unwrap();
        listener.update(table, 0, true);
        listener
    }

    #[test]
    fn keeps_spare_sockets_listening_after_every_syn() {
        let mut table = FakeTable::default();
        let mut l = listener(&mut table);
        for now in 1..=3 {
            table.syn();
            l.update(&mut table, now, true);
            assert_eq!(table.states.values().filter(|&&s| s == State::Listen).count(), 2);
        }
        assert_eq!(l.half_open(), 3);
    }

    #[test]
    fn completed_handshakes_are_accepted_in_arrival_order() {
        let mut table = FakeTable::default();
        let mut l = listener(&mut table);
        let a = table.syn();
        let b = table.syn();
        l.update(&mut table, 1, true);
        table.set(b, State::Established);
        l.update(&mut table, 2, true);
        table.set(a, State::CloseWait); // data and FIN came with the ACK
        l.update(&mut table, 3, true);
        assert_eq!((l.accept(), l.accept(), l.accept()), (Some(b), Some(a), None));
    }

    #[test]
    fn every_socket_set_keeps_its_listening_sockets() {
        let mut table = FakeTable { sets: 3, ..FakeTable::default() };
        let mut l = listener(&mut table);
        let listening_per_set = |table: &FakeTable| {
            let mut counts = [0; 3];
            for (h, _) in table.states.iter().filter(|(_, &s)| s == State::Listen) {
                counts[table.set_of[h]] += 1;
            }
            counts
        };
        assert_eq!(listening_per_set(&table), [2, 2, 2]);
        // SYNs all land in set 1: only set 1 is topped up.
        for now in 1..=5 {
            let h = *table.states.iter().find(|(h, &s)| s == State::Listen && table.set_of[h] == 1).unwrap().0;
            table.set(h, State::SynReceived);
            l.update(&mut table, now, true);
        }
        assert_eq!(listening_per_set(&table), [2, 2, 2]);
        assert_eq!(table.states.len(), 6 + 4, "six listening, four half-open (the cap)");
    }

    #[test]
    fn refilling_after_a_frame_only_replaces_the_listening_socket() {
        let mut table = FakeTable::default();
        let mut l = listener(&mut table);
        let done = table.syn();
        l.update(&mut table, 1, true);
        table.set(done, State::Established);
        let syn = table.syn();
        l.refill(&mut table, 2, true);
        assert_eq!(table.states.values().filter(|&&s| s == State::Listen).count(), 2);
        assert_eq!((l.half_open(), l.queued()), (2, 0), "completed handshakes wait for the round");
        assert_eq!(table.state(syn), State::SynReceived);
        l.update(&mut table, 3, true);
        assert_eq!((l.half_open(), l.queued()), (1, 1));
    }

    #[test]
    fn a_connection_in_syn_received_is_never_accepted() {
        let mut table = FakeTable::default();
        let mut l = listener(&mut table);
        table.syn();
        l.update(&mut table, 1, true);
        assert_eq!(l.accept(), None);
    }

    #[test]
    fn silent_half_open_connections_time_out_without_a_reset() {
        let mut table = FakeTable::default();
        let mut l = listener(&mut table);
        let h = table.syn();
        l.update(&mut table, 10, true);
        assert_eq!(l.update(&mut table, 109, true).timed_out, 0);
        assert_eq!(l.update(&mut table, 110, true), Events { timed_out: 1, ..Events::default() });
        assert_eq!(table.forgotten, vec![h]);
        assert!(table.refused.is_empty());
        assert_eq!(l.half_open(), 0);
    }

    #[test]
    fn a_syn_flood_evicts_the_oldest_half_open_and_leaves_the_port_open() {
        let mut table = FakeTable::default();
        let mut l = listener(&mut table);
        let mut first = Vec::new();
        let mut evicted = 0;
        // One forged SYN every 10 ticks: the oldest are old enough to go.
        for i in 1..=1000 {
            let h = table.syn();
            if i <= 3 {
                first.push(h);
            }
            evicted += l.update(&mut table, i * 10, true).evicted;
        }
        assert_eq!(evicted, 1000 - 4);
        assert_eq!(&table.forgotten[..3], &first[..]);
        assert_eq!(l.half_open(), 4);
        assert_eq!(table.live(), 4 + 2, "four half-open, two listening: nothing else is held");
        // A real client still gets through, and the flood's sockets go.
        let client = table.syn();
        l.update(&mut table, 10_010, true);
        table.set(client, State::Established);
        l.update(&mut table, 10_011, true);
        assert_eq!(l.accept(), Some(client));
    }

    #[test]
    fn a_burst_of_real_clients_keeps_its_first_handshakes_and_drops_the_newest_syns() {
        let mut table = FakeTable::default();
        let mut l = listener(&mut table);
        let mut syns = Vec::new();
        for _ in 0..6 {
            syns.push(table.syn());
            l.update(&mut table, 1, true);
        }
        // All four slots are young: the fifth and sixth SYN are dropped
        // before their SYN-ACK, the first four complete.
        assert_eq!(table.forgotten, syns[4..]);
        for &h in &syns[..4] {
            table.set(h, State::Established);
        }
        l.update(&mut table, 2, true);
        assert_eq!(l.queued() + l.half_open(), 4);
    }

    #[test]
    fn once_handshakes_are_seen_to_be_quick_a_flood_is_evicted_sooner() {
        let mut table = FakeTable::default();
        let limits = Limits { evictable_after: 100, ..LIMITS };
        let mut l = Listener::new(&mut table, 80, limits).unwrap();
        // A real client completes its handshake in 2 ticks.
        let client = table.syn();
        l.update(&mut table, 100, true);
        table.set(client, State::Established);
        l.update(&mut table, 102, true);
        assert_eq!(l.accept(), Some(client));
        // A flood fills the four slots; 10 ticks later (past 4 x 2 and the
        // floor of 100 / 10, well under the 100 at most) the oldest goes
        // for a new SYN.
        let flood: Vec<u32> = (0..4)
            .map(|_| {
                let h = table.syn();
                l.update(&mut table, 200, true);
                h
            })
            .collect();
        let late = table.syn();
        assert_eq!(l.update(&mut table, 210, true).evicted, 1);
        assert_eq!(table.forgotten, vec![flood[0]]);
        assert_eq!(table.state(late), State::SynReceived, "the new SYN keeps its slot");
    }

    #[test]
    fn completed_connections_are_not_evicted_for_syns() {
        let mut table = FakeTable::default();
        let mut l = listener(&mut table);
        let mut done = Vec::new();
        for now in 1..=7 {
            let h = table.syn();
            l.update(&mut table, now, true);
            table.set(h, State::Established);
            l.update(&mut table, now, true);
            done.push(h);
        }
        // Three fill the queue, four wait for room: every slot is taken.
        assert_eq!((l.queued(), l.half_open()), (3, 4));
        // A new SYN is then the oldest half-open: dropped without a word,
        // as Linux drops SYNs to a full accept queue (the client retries).
        let late = table.syn();
        let events = l.update(&mut table, 8, true);
        assert_eq!(events, Events { evicted: 1, ..Events::default() });
        assert_eq!(table.forgotten, vec![late]);
        // Accepting makes room, in order.
        for &h in &done {
            assert_eq!(l.accept(), Some(h));
            l.update(&mut table, 9, true);
        }
    }

    #[test]
    fn the_accept_queue_never_holds_more_than_the_backlog() {
        let mut table = FakeTable::default();
        let mut l = Listener::new(&mut table, 80, Limits { backlog: 2, ..LIMITS }).unwrap();
        for now in 1..=3 {
            let h = table.syn();
            l.update(&mut table, now, true);
            table.set(h, State::Established);
            l.update(&mut table, now, true);
        }
        assert_eq!((l.queued(), l.half_open()), (2, 1));
    }

    #[test]
    fn unaccepted_connections_are_reset_after_the_accept_timeout() {
        let mut table = FakeTable::default();
        let mut l = listener(&mut table);
        let h = table.syn();
        l.update(&mut table, 0, true);
        table.set(h, State::Established);
        l.update(&mut table, 5, true);
        assert_eq!(l.update(&mut table, 1005, true).timed_out, 1);
        assert_eq!(table.refused, vec![h]);
    }

    #[test]
    fn connections_reset_before_accept_are_freed() {
        let mut table = FakeTable::default();
        let mut l = listener(&mut table);
        let h = table.syn();
        l.update(&mut table, 1, true);
        table.set(h, State::Established);
        l.update(&mut table, 2, true);
        table.set(h, State::Closed);
        l.update(&mut table, 3, true);
        assert_eq!(l.accept(), None);
        assert_eq!(table.forgotten, vec![h]);
    }

    #[test]
    fn a_reset_during_the_handshake_returns_the_socket_to_listen() {
        let mut table = FakeTable::default();
        let mut l = listener(&mut table);
        let h = table.syn();
        l.update(&mut table, 1, true);
        table.set(h, State::Listen);
        l.update(&mut table, 2, true);
        assert_eq!(l.half_open(), 0);
        assert_eq!(table.live(), 2, "reused or freed, never leaked");
    }

    #[test]
    fn short_memory_refuses_new_connections_and_keeps_queued_ones() {
        let mut table = FakeTable::default();
        let mut l = listener(&mut table);
        let old = table.syn();
        l.update(&mut table, 1, true);
        table.set(old, State::Established);
        l.update(&mut table, 2, true);
        let new = table.syn();
        assert_eq!(l.update(&mut table, 3, false).refused, 1);
        assert_eq!(table.refused, vec![new]);
        assert_eq!(l.accept(), Some(old));
    }

    #[test]
    fn a_port_with_no_memory_for_sockets_recovers_when_memory_returns() {
        let mut table = FakeTable::default();
        let mut l = listener(&mut table);
        table.fail_listen = true;
        table.syn();
        table.syn();
        l.update(&mut table, 1, true);
        assert!(!table.states.values().any(|&s| s == State::Listen));
        table.fail_listen = false;
        l.update(&mut table, 2, true);
        assert_eq!(table.states.values().filter(|&&s| s == State::Listen).count(), 2);
    }

    #[test]
    fn closing_resets_connections_and_frees_every_socket() {
        let mut table = FakeTable::default();
        let mut l = listener(&mut table);
        let a = table.syn();
        l.update(&mut table, 1, true);
        table.set(a, State::Established);
        l.update(&mut table, 2, true);
        table.syn();
        l.update(&mut table, 3, true);
        l.close(&mut table);
        assert_eq!(table.live(), 0);
        assert_eq!(table.refused.len(), 2);
    }
}
