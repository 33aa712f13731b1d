//! A tiny deterministic in-test network for the Raft core: N nodes, each a `Raft` with a
//! `MemStorage`, driven exactly as a real driver must drive them (persist each Ready, then send
//! its messages and apply its committed entries, then `advance`), and a FIFO network with
//! filters (isolate a node, cut a directed link, drop or hold messages by predicate).
//!
//! Every Ready is checked on the way through: committed entries come out in order, each index
//! exactly once and never beyond the commit; a granted vote and an acknowledged append are
//! durable before the message leaves; no two nodes apply different entries at one index; at
//! most one leader per term.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use dmq_raft::{
    Config, Entry, EntryKind, HardState, Index, MemStorage, Message, MessageBody, NodeId,
    ProposeError, Raft, ReadState, RecoveredState, Role, Snapshot, Storage, Term,
};

/// What the network does with one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Deliver,
    Drop,
    /// Keep it aside; [`Cluster::release_held`] puts it back on the wire.
    Hold,
}

pub type Filter = Box<dyn FnMut(&Message) -> Verdict>;

/// The test configuration: defaults with a fixed seed per node.
pub fn config(id: NodeId, voters: &[NodeId]) -> Config {
    let mut c = Config::new(id, voters.to_vec());
    c.seed = 0x5eed_0000 + id;
    c
}

pub fn ids(n: u64) -> Vec<NodeId> {
    (1..=n).collect()
}

/// Entries with the given `(index, term)`, data = "index@term".
pub fn ents(spec: &[(Index, Term)]) -> Vec<Entry> {
    spec.iter().map(|&(i, t)| ent(i, t)).collect()
}

pub fn ent(index: Index, term: Term) -> Entry {
    Entry {
        index,
        term,
        kind: EntryKind::Normal,
        data: format!("{index}@{term}").into_bytes(),
    }
}

/// Entries `lo..=hi`, all of `term`.
pub fn run(lo: Index, hi: Index, term: Term) -> Vec<(Index, Term)> {
    (lo..=hi).map(|i| (i, term)).collect()
}

pub fn recovered(
    term: Term,
    vote: Option<NodeId>,
    commit: Index,
    entries: Vec<Entry>,
) -> RecoveredState {
    RecoveredState {
        hard_state: HardState {
            term,
            vote,
            commit,
            catching_up: false,
        },
        snapshot: None,
        entries,
    }
}

pub fn vote_req(
    from: NodeId,
    to: NodeId,
    term: Term,
    last: (Index, Term),
    pre_vote: bool,
) -> Message {
    Message {
        from,
        to,
        term,
        body: MessageBody::RequestVote {
            pre_vote,
            last_log_index: last.0,
            last_log_term: last.1,
            leadership_transfer: false,
        },
    }
}

pub fn append(
    from: NodeId,
    to: NodeId,
    term: Term,
    prev: (Index, Term),
    entries: Vec<Entry>,
    commit: Index,
) -> Message {
    Message {
        from,
        to,
        term,
        body: MessageBody::AppendEntries {
            prev_log_index: prev.0,
            prev_log_term: prev.1,
            entries,
            leader_commit: commit,
            read_round: 0,
        },
    }
}

pub fn is_append_with_entries(m: &Message) -> bool {
    matches!(&m.body, MessageBody::AppendEntries { entries, .. } if !entries.is_empty())
}

pub fn is_rejection(m: &Message) -> bool {
    matches!(
        m.body,
        MessageBody::AppendEntriesResponse { success: false, .. }
    )
}

/// A granted (pre-)vote response.
pub fn is_grant(m: &Message, pre: bool) -> bool {
    matches!(m.body, MessageBody::RequestVoteResponse { pre_vote, granted: true } if pre_vote == pre)
}

pub fn is_refusal(m: &Message, pre: bool) -> bool {
    matches!(m.body, MessageBody::RequestVoteResponse { pre_vote, granted: false } if pre_vote == pre)
}

/// A deterministic xorshift generator for workloads.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

pub struct Node {
    pub cfg: Config,
    pub raft: Raft,
    pub storage: MemStorage,
    /// The state machine: every entry applied, in order (across restarts; a restored snapshot
    /// is recorded in `snapshots` and moves `applied_index`).
    pub applied: Vec<Entry>,
    pub applied_index: Index,
    pub snapshots: Vec<Snapshot>,
    pub read_states: Vec<ReadState>,
    pub readies: usize,
}

pub struct Cluster {
    pub voters: Vec<NodeId>,
    pub nodes: BTreeMap<NodeId, Node>,
    pub queue: VecDeque<Message>,
    pub held: Vec<Message>,
    pub isolated: BTreeSet<NodeId>,
    /// Directed links that drop everything: (from, to).
    pub cut: BTreeSet<(NodeId, NodeId)>,
    pub filter: Option<Filter>,
    /// Every message any Ready handed out, in order.
    pub sent: Vec<Message>,
    /// Every message stepped into a node, in order.
    pub delivered: Vec<Message>,
    /// The leader seen in each term (election safety).
    pub leaders: BTreeMap<Term, NodeId>,
    /// What was applied at each index by anyone (state machine safety).
    pub applied_at: BTreeMap<Index, Entry>,
}

impl Cluster {
    /// `n` fresh nodes with the test defaults.
    pub fn new(n: u64) -> Cluster {
        Cluster::new_with(n, |_| {})
    }

    /// `n` fresh nodes whose configurations `tweak` adjusts.
    pub fn new_with(n: u64, tweak: impl Fn(&mut Config)) -> Cluster {
        let voters = ids(n);
        let specs = voters
            .iter()
            .map(|&id| {
                let mut c = config(id, &voters);
                tweak(&mut c);
                (c, RecoveredState::default())
            })
            .collect();
        Cluster::build(voters, specs)
    }

    /// Nodes from explicit configurations and recovered states. Voters without a spec have no
    /// node: messages to them vanish (useful to drive one node by hand).
    pub fn build(voters: Vec<NodeId>, specs: Vec<(Config, RecoveredState)>) -> Cluster {
        let mut nodes = BTreeMap::new();
        for (cfg, rec) in specs {
            let mut storage = MemStorage::new();
            if rec.snapshot.is_some() {
                storage.persist(rec.snapshot.as_ref(), &[], None).unwrap();
            }
            storage
                .persist(None, &rec.entries, Some(&rec.hard_state))
                .unwrap();
            let applied_index = rec.snapshot.as_ref().map_or(0, |s| s.meta.last_index);
            let raft = Raft::new(cfg.clone(), rec, applied_index).expect("valid config");
            nodes.insert(
                cfg.id,
                Node {
                    cfg,
                    raft,
                    storage,
                    applied: Vec::new(),
                    applied_index,
                    snapshots: Vec::new(),
                    read_states: Vec::new(),
                    readies: 0,
                },
            );
        }
        Cluster {
            voters,
            nodes,
            queue: VecDeque::new(),
            held: Vec::new(),
            isolated: BTreeSet::new(),
            cut: BTreeSet::new(),
            filter: None,
            sent: Vec::new(),
            delivered: Vec::new(),
            leaders: BTreeMap::new(),
            applied_at: BTreeMap::new(),
        }
    }

    pub fn raft(&self, id: NodeId) -> &Raft {
        &self.nodes[&id].raft
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[&id]
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        self.nodes.get_mut(&id).expect("node exists")
    }

    pub fn node_ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    /// Drains `id`'s Readies the way a driver must: persist, queue messages, apply, advance.
    pub fn drain(&mut self, id: NodeId) {
        for _ in 0..100 {
            let node = self.nodes.get_mut(&id).expect("node exists");
            if !node.raft.has_ready() {
                break;
            }
            let rd = node.raft.ready();
            node.readies += 1;
            node.storage
                .persist(rd.snapshot.as_ref(), &rd.entries, rd.hard_state.as_ref())
                .unwrap();
            // Durability before any message that depends on it leaves.
            let hs = node.storage.hard_state();
            for m in &rd.messages {
                assert_eq!(m.from, id);
                match m.body {
                    MessageBody::RequestVoteResponse {
                        pre_vote: false,
                        granted: true,
                    } => {
                        assert_eq!(
                            hs.term, m.term,
                            "node {id}: vote sent before its term was persisted"
                        );
                        assert_eq!(
                            hs.vote,
                            Some(m.to),
                            "node {id}: vote sent before it was persisted"
                        );
                    }
                    MessageBody::RequestVote {
                        pre_vote: false, ..
                    } => {
                        assert_eq!(
                            (hs.term, hs.vote),
                            (m.term, Some(id)),
                            "node {id}: campaign not persisted"
                        );
                    }
                    MessageBody::AppendEntriesResponse {
                        success: true,
                        match_index,
                        ..
                    } => {
                        let snap = node.storage.snapshot_index();
                        if match_index > snap {
                            let stored = node.storage.entry(match_index).map(|e| e.term);
                            assert_eq!(
                                stored,
                                node.raft.term_at(match_index),
                                "node {id}: acknowledged {match_index} before it was durable"
                            );
                        }
                    }
                    _ => {}
                }
            }
            if let Some(s) = &rd.snapshot {
                assert!(
                    s.meta.last_index > node.applied_index,
                    "node {id}: snapshot behind the state machine"
                );
                node.applied_index = s.meta.last_index;
                node.snapshots.push(s.clone());
            }
            for e in &rd.committed_entries {
                assert_eq!(
                    e.index,
                    node.applied_index + 1,
                    "node {id}: applied out of order / twice"
                );
                assert!(
                    e.index <= node.raft.commit_index(),
                    "node {id}: applied {} beyond the commit",
                    e.index
                );
                assert!(
                    e.index <= node.storage.synced_index(),
                    "node {id}: applied a non-durable entry"
                );
                node.applied_index = e.index;
                node.applied.push(e.clone());
                if let Some(prev) = self.applied_at.get(&e.index) {
                    assert_eq!(
                        prev, e,
                        "state machine safety: two entries applied at {}",
                        e.index
                    );
                } else {
                    self.applied_at.insert(e.index, e.clone());
                }
            }
            node.read_states.extend(rd.read_states.iter().copied());
            for m in rd.messages {
                self.sent.push(m.clone());
                self.queue.push_back(m);
            }
            node.raft.advance();
            if node.raft.role() == Role::Leader {
                let term = node.raft.term();
                let seen = *self.leaders.entry(term).or_insert(id);
                assert_eq!(seen, id, "election safety: two leaders in term {term}");
            }
        }
        assert!(
            !self.nodes[&id].raft.has_ready(),
            "node {id}: Ready never drained"
        );
    }

    pub fn drain_all(&mut self) {
        for id in self.node_ids() {
            self.drain(id);
        }
    }

    fn verdict(&mut self, m: &Message) -> Verdict {
        if !self.nodes.contains_key(&m.to)
            || self.isolated.contains(&m.from)
            || self.isolated.contains(&m.to)
            || self.cut.contains(&(m.from, m.to))
        {
            return Verdict::Drop;
        }
        match &mut self.filter {
            Some(f) => f(m),
            None => Verdict::Deliver,
        }
    }

    /// Steps `m` into its target (bypassing the network) and drains the target.
    pub fn inject(&mut self, m: Message) {
        let to = m.to;
        self.delivered.push(m.clone());
        self.nodes.get_mut(&to).expect("target exists").raft.step(m);
        self.drain(to);
    }

    /// Delivers the oldest queued message (through the filters). False when the queue is empty.
    pub fn deliver_one(&mut self) -> bool {
        let Some(m) = self.queue.pop_front() else {
            return false;
        };
        match self.verdict(&m) {
            Verdict::Deliver => self.inject(m),
            Verdict::Drop => {}
            Verdict::Hold => self.held.push(m),
        }
        true
    }

    /// Delivers until the network is quiet (bounded). Returns how many messages were taken.
    pub fn deliver_all(&mut self) -> usize {
        self.drain_all();
        let mut n = 0;
        while self.deliver_one() {
            n += 1;
            assert!(n < 200_000, "network never went quiet");
        }
        n
    }

    /// One message round: delivers what is queued now; what they cause waits for the next.
    pub fn round(&mut self) -> usize {
        self.drain_all();
        let n = self.queue.len();
        for _ in 0..n {
            self.deliver_one();
        }
        n
    }

    pub fn tick(&mut self, id: NodeId) {
        self.nodes.get_mut(&id).expect("node exists").raft.tick();
        self.drain(id);
    }

    pub fn tick_all(&mut self) {
        for id in self.node_ids() {
            self.tick(id);
        }
    }

    /// `n` times: tick every node, then deliver until quiet.
    pub fn tick_all_and_deliver(&mut self, n: usize) {
        for _ in 0..n {
            self.tick_all();
            self.deliver_all();
        }
    }

    /// One heartbeat from `leader` (heartbeat interval is 1 tick by default), delivered.
    pub fn heartbeat(&mut self, leader: NodeId) {
        for _ in 0..self.raft(leader).config().heartbeat_interval_ticks {
            self.tick(leader);
        }
        self.deliver_all();
    }

    /// `id` campaigns at once (no pre-vote); delivers until quiet; must win.
    pub fn elect(&mut self, id: NodeId) {
        self.node_mut(id).raft.campaign_now();
        self.drain(id);
        self.deliver_all();
        assert_eq!(self.raft(id).role(), Role::Leader, "node {id} did not win");
    }

    pub fn propose(&mut self, id: NodeId, data: &[u8]) -> Result<(Index, Term), ProposeError> {
        let r = self.node_mut(id).raft.propose(data.to_vec());
        self.drain(id);
        r
    }

    pub fn read_index(&mut self, id: NodeId, ctx: u64) -> Result<(), ProposeError> {
        let r = self.node_mut(id).raft.read_index(ctx);
        self.drain(id);
        r
    }

    /// The leader the application snapshots at `index`: compacts the core and stores it.
    pub fn compact(&mut self, id: NodeId, index: Index, data: &[u8]) {
        let node = self.node_mut(id);
        node.raft.compact(index, data.to_vec());
        let snap = node.raft.snapshot().clone();
        node.storage.compact(&snap).unwrap();
    }

    /// Crash and restart `id` from its storage; the state machine keeps what it applied.
    pub fn restart(&mut self, id: NodeId) {
        let node = self.node_mut(id);
        let rec = node.storage.recover().unwrap();
        node.raft = Raft::new(node.cfg.clone(), rec, node.applied_index).expect("valid config");
        // The state machine is durable here: the core resumes right after what it applied.
        assert_eq!(
            node.raft.applied_index(),
            node.applied_index,
            "applied index not restored"
        );
    }

    /// Crash `id` and bring it back with empty storage (a wiped data dir), as a member that
    /// knows the cluster exists ([`Raft::rejoin`]).
    pub fn wipe(&mut self, id: NodeId) {
        let node = self.node_mut(id);
        node.storage = MemStorage::new();
        node.applied.clear();
        node.applied_index = 0;
        node.snapshots.clear();
        node.raft =
            Raft::new(node.cfg.clone(), RecoveredState::default(), 0).expect("valid config");
        node.raft.rejoin();
    }

    pub fn isolate(&mut self, id: NodeId) {
        self.isolated.insert(id);
    }

    /// Reconnects every node and link (the filter stays: clear it yourself).
    pub fn heal(&mut self) {
        self.isolated.clear();
        self.cut.clear();
    }

    pub fn release_held(&mut self) {
        let held = std::mem::take(&mut self.held);
        self.queue.extend(held);
    }

    pub fn leaders(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.raft.role() == Role::Leader)
            .map(|(&id, _)| id)
            .collect()
    }

    /// The single node that is leader in the highest term any leader has.
    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.raft.role() == Role::Leader)
            .max_by_key(|(_, n)| n.raft.term())
            .map(|(&id, _)| id)
    }

    /// Messages handed out since `mark` (an index into `sent`) that satisfy `pred`.
    pub fn sent_since(&self, mark: usize, pred: impl Fn(&Message) -> bool) -> Vec<Message> {
        self.sent[mark..]
            .iter()
            .filter(|m| pred(m))
            .cloned()
            .collect()
    }

    /// The log of `id` as (index, term), from its first retained entry to its last.
    pub fn log_of(&self, id: NodeId) -> Vec<(Index, Term)> {
        let r = self.raft(id);
        (r.snapshot_meta().last_index + 1..=r.last_index())
            .map(|i| (i, r.term_at(i).expect("entry in log")))
            .collect()
    }

    pub fn applied_data(&self, id: NodeId) -> Vec<Vec<u8>> {
        self.nodes[&id]
            .applied
            .iter()
            .filter(|e| e.kind == EntryKind::Normal)
            .map(|e| e.data.clone())
            .collect()
    }
}
