//! The signaling state machine: groups, members, bindings, relaying and heartbeat misses
//! (docs/PROTOCOL.md §3 to §6).
//!
//! It owns no socket and reads no clock: the server feeds it events for a [`ConnId`]
//! (`on_open`, `on_message`, `on_heartbeat_due`, `on_close`) and applies the [`Effect`]s it
//! pushes into a caller-owned `Vec`, in order. When the hub decides to close a peer it forgets
//! the peer at once (and tells its partners), so a later `on_close` for it is a no-op.
//! Nothing here imports mio, tungstenite or `std::net`.

mod ids;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use prost::Message as _;

use crate::close::CloseReason;
use crate::proto::{self, Content, GroupData, Message, Type};
use ids::SignalingIds;

/// The longest group key accepted, in bytes (docs/PROTOCOL.md §1).
pub const MAX_KEY_LEN: usize = 512;

/// Most member ids one `connect` may list; more closes the peer with 4743. A Netflux group is
/// a full mesh of WebRTC links and a browser holds at most 500 peer connections (Chromium's
/// cap), so no real list comes near it; it bounds the hub's work for one `connect`, which is
/// linear in the list.
pub const MAX_CONNECT_MEMBERS: usize = 8192;

/// The largest encoded `connect` that can list at most [`MAX_CONNECT_MEMBERS`] ids: each id
/// takes at most 6 bytes (a tag and a 5-byte varint, unpacked), the `id` field 6 and a packed
/// list's header 6. A larger one is refused before it is decoded, so that a 2 MiB list of ids
/// costs no more than a glance.
const MAX_CONNECT_BYTES: usize = MAX_CONNECT_MEMBERS * 6 + 12;

/// Most fields one message may hold (top level, `content`, `connect`; member ids aside); more
/// closes the peer with 4743. A Netflux message has at most five; a message of a million tiny
/// unknown fields would cost milliseconds to decode.
pub const MAX_FIELDS: usize = 64;

/// Messages longer than this are looked at before they are decoded (see [`proto::shape`]);
/// shorter ones, every relayed signaling message among them, are cheap to decode anyway.
const SHAPE_CHECK_FROM: usize = 4096;

/// Heartbeat ticks without an answer after which a peer is closed (docs/PROTOCOL.md §4).
pub const MAX_MISSED_HEARTBEATS: u8 = 3;

/// Identifies one connection for its whole life: the slot is reused once the connection is
/// gone, the generation never is, so a stale id never reaches a newer connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    /// Index in the server's slab (also the mio token).
    pub slot: u32,
    /// Counter that tells apart the successive connections of one slot.
    pub generation: u32,
}

impl std::fmt::Display for ConnId {
    /// `slot.generation`, as the logs name a connection.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.slot, self.generation)
    }
}

/// What the hub asks the server to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Send one binary frame holding these message bytes.
    Send(ConnId, Bytes),
    /// Close the connection with this reason. The hub has already forgotten the peer.
    Close(ConnId, CloseReason),
}

/// The relay between a joiner and the member it was bound to (docs/PROTOCOL.md §5). Stored on the
/// joiner; the member lists its joiners in [`Peer::joiners`].
#[derive(Debug, Clone, Copy)]
struct Binding {
    member: ConnId,
    /// Direction joiner -> member is live (not yet ended by `lastData`).
    to_member: bool,
    /// Direction member -> joiner is live.
    to_joiner: bool,
}

#[derive(Debug)]
struct Peer {
    id: ConnId,
    key: Box<[u8]>,
    favored: bool,
    signaling_id: u32,
    member_id: Option<u32>,
    /// Members bound to since this peer last became a member (connections, not ids: §3).
    tried: Vec<ConnId>,
    missed: u8,
    /// This peer's binding as a joiner.
    binding: Option<Binding>,
    /// Joiners whose binding names this peer as their member.
    joiners: Vec<ConnId>,
}

#[derive(Debug, Default)]
struct Group {
    /// Members in the order they joined.
    members: Vec<ConnId>,
}

/// What a `connect` request was answered (docs/PROTOCOL.md §5), for tests and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Connected,
    Bound,
    /// The peer would have been bound to join a group that is full.
    Full,
}

/// The signaling state of all live peers. See the module documentation.
#[derive(Debug)]
pub struct Hub {
    /// Indexed by `ConnId::slot`; the generation is checked on every lookup.
    peers: Vec<Option<Peer>>,
    peer_count: usize,
    groups: HashMap<Box<[u8]>, Group>,
    ids: SignalingIds,
    counters: Counters,
    /// Where forwarded messages are encoded; reused once the server has copied them out.
    scratch: BytesMut,
    /// Most members a group takes newcomers up to (0: no cap).
    max_group_size: usize,
}

/// What the hub has done since it started, for metrics. Counters only go up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Contents relayed (each forwarding counts once; disconnect notes excluded).
    pub relayed_messages: u64,
    /// Payload bytes of those contents.
    pub relayed_bytes: u64,
    /// Peers closed for missed heartbeats (4742).
    pub heartbeat_timeouts: u64,
}

impl Hub {
    /// An empty hub. `seed` feeds the generator of signaling ids.
    pub fn new(seed: u64) -> Self {
        Self {
            peers: Vec::new(),
            peer_count: 0,
            groups: HashMap::new(),
            ids: SignalingIds::new(seed),
            counters: Counters::default(),
            scratch: BytesMut::new(),
            max_group_size: 0,
        }
    }

    /// Caps groups at `n` members for newcomers (0: no cap, as the original): a `connect`
    /// that would bind a peer to join a group of `n` members closes it with 4746. A peer that
    /// shares a member with the group (docs/PROTOCOL.md §5 rule 3) is never refused.
    pub fn with_max_group_size(mut self, n: usize) -> Self {
        self.max_group_size = n;
        self
    }

    /// What the hub has done since it started.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Members of all groups. Walks the groups: for scrapes, not for the hot path.
    pub fn member_count(&self) -> usize {
        self.groups.values().map(|g| g.members.len()).sum()
    }

    /// Joiners bound to a member. Walks the peers: for scrapes, not for the hot path.
    pub fn binding_count(&self) -> usize {
        self.peers
            .iter()
            .flatten()
            .filter(|p| p.binding.is_some())
            .count()
    }

    /// Number of live peers.
    pub fn peer_count(&self) -> usize {
        self.peer_count
    }

    /// Number of groups (keys with at least one member).
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// A WebSocket connection opened on `key` (the URL path as sent, docs/PROTOCOL.md §1).
    /// A bad key closes it at once with 4741; otherwise the peer gets its signaling id.
    pub fn on_open(&mut self, id: ConnId, key: &[u8], favored: bool, out: &mut Vec<Effect>) {
        // A slot must be free before it is reused; if the driver ever breaks that, forget the
        // stale peer properly rather than leak its group membership and bindings. First, so
        // that a bad key on the new connection does not leave the stale peer behind.
        if let Some(Some(old)) = self.peers.get(id.slot as usize) {
            let old = old.id;
            self.on_close(old, out);
        }
        if key.is_empty() {
            out.push(Effect::Close(id, CloseReason::KeyEmpty));
            return;
        }
        if key.len() > MAX_KEY_LEN {
            out.push(Effect::Close(id, CloseReason::KeyTooLong));
            return;
        }
        let slot = id.slot as usize;
        if self.peers.len() <= slot {
            self.peers.resize_with(slot + 1, || None);
        }
        let signaling_id = self.ids.draw(id);
        self.peers[slot] = Some(Peer {
            id,
            key: key.into(),
            favored,
            signaling_id,
            member_id: None,
            tried: Vec::new(),
            missed: 0,
            binding: None,
            joiners: Vec::new(),
        });
        self.peer_count += 1;
    }

    /// One binary frame from a peer.
    pub fn on_message(&mut self, id: ConnId, frame: Bytes, out: &mut Vec<Effect>) {
        if self.peer(id).is_none() {
            return;
        }
        // A short message is cheap to decode whatever it holds; a long one is looked at first.
        if frame.len() > SHAPE_CHECK_FROM {
            match proto::shape(&frame, MAX_FIELDS) {
                Some(s) if s.connect_bytes > MAX_CONNECT_BYTES => {
                    return self.close(id, CloseReason::TooManyMembers, out)
                }
                Some(s) if s.fields > MAX_FIELDS => {
                    return self.close(id, CloseReason::TooManyFields, out)
                }
                _ => {}
            }
        }
        let msg = match Message::decode(frame) {
            Ok(Message { r#type: Some(t) }) => t,
            Ok(Message { r#type: None }) => return self.close(id, CloseReason::EmptyMessage, out),
            Err(_) => return self.close(id, CloseReason::BadMessage, out),
        };
        match msg {
            // §4: any heartbeat, true or false, resets the count; the server never answers.
            Type::Heartbeat(_) => {
                if let Some(p) = self.peer_mut(id) {
                    p.missed = 0;
                }
            }
            Type::Content(content) => self.on_content(id, content, out),
            Type::Connect(data) if data.members.len() > MAX_CONNECT_MEMBERS => {
                self.close(id, CloseReason::TooManyMembers, out)
            }
            Type::Connect(data) => {
                let (answer, blocking) = self.on_connect(id, data);
                let bytes = match answer {
                    Answer::Connected => proto::CONNECTED_TRUE,
                    Answer::Bound => proto::CONNECTED_FALSE,
                    Answer::Full => return self.close(id, CloseReason::GroupFull, out),
                };
                out.push(Effect::Send(id, bytes));
                // The replaced member goes after the answer, as in the original, whose close
                // (and its disconnect notes) happens asynchronously.
                if let Some(lone) = blocking {
                    self.close(lone, CloseReason::BlockingMember, out);
                }
            }
            // §7: a `connected` from a client is ignored.
            Type::Connected(_) => {}
        }
    }

    /// A heartbeat interval passed for this peer (docs/PROTOCOL.md §4).
    pub fn on_heartbeat_due(&mut self, id: ConnId, out: &mut Vec<Effect>) {
        let Some(p) = self.peer_mut(id) else { return };
        p.missed = p.missed.saturating_add(1);
        if p.missed >= MAX_MISSED_HEARTBEATS {
            self.counters.heartbeat_timeouts += 1;
            self.close(id, CloseReason::Heartbeat, out);
        } else {
            out.push(Effect::Send(id, proto::HEARTBEAT));
        }
    }

    /// Closes a peer for `reason`: pushes the close, then forgets the peer as `on_close` does.
    pub fn close(&mut self, id: ConnId, reason: CloseReason, out: &mut Vec<Effect>) {
        out.push(Effect::Close(id, reason));
        self.on_close(id, out);
    }

    /// The peer is gone (docs/PROTOCOL.md §6): it leaves its group, every live direction whose
    /// source it is ends with one empty content, and its signaling id is released.
    /// Unknown or already forgotten peers are ignored.
    pub fn on_close(&mut self, id: ConnId, out: &mut Vec<Effect>) {
        let Some(peer) = self.take_peer(id) else {
            return;
        };
        if peer.member_id.is_some() {
            self.remove_member(&peer.key, id);
        }
        // As a joiner: tell its member, and leave the member's list.
        if let Some(b) = peer.binding {
            if let Some(m) = self.peer_mut(b.member) {
                m.joiners.retain(|&j| j != id);
                if b.to_member {
                    out.push(Effect::Send(
                        b.member,
                        proto::encode_content(&mut self.scratch, peer.signaling_id, 0, &[]),
                    ));
                }
            }
        }
        // As a member: tell each joiner bound to it, and end their bindings.
        for joiner in peer.joiners {
            let Some(j) = self.peer_mut(joiner) else {
                continue;
            };
            let Some(b) = j.binding.take() else { continue };
            if b.to_joiner {
                let s = j.signaling_id;
                out.push(Effect::Send(
                    joiner,
                    proto::encode_content(&mut self.scratch, 0, s, &[]),
                ));
            }
        }
        self.ids.release(peer.signaling_id);
    }

    fn on_content(&mut self, id: ConnId, content: Content, out: &mut Vec<Effect>) {
        let Content {
            recipient_id,
            last_data,
            data,
            ..
        } = content;
        let len = data.len() as u64;
        let Some(p) = self.peer_mut(id) else { return };
        let signaling_id = p.signaling_id;
        // As a joiner: whatever the recipientId, to its own member (§5).
        if let Some(b) = p.binding.as_mut().filter(|b| b.to_member) {
            b.to_member = !last_data;
            out.push(Effect::Send(
                b.member,
                proto::encode_content(&mut self.scratch, signaling_id, 0, &data),
            ));
            self.counters.relayed_messages += 1;
            self.counters.relayed_bytes += len;
        }
        // As a member: to the joiner bound to it under that signaling id (never 0).
        if recipient_id == 0 {
            return;
        }
        let Some(joiner) = self.ids.get(recipient_id) else {
            return;
        };
        let Some(j) = self.peer_mut(joiner) else {
            return;
        };
        if let Some(b) = j.binding.as_mut().filter(|b| b.member == id && b.to_joiner) {
            b.to_joiner = !last_data;
            out.push(Effect::Send(
                joiner,
                proto::encode_content(&mut self.scratch, 0, recipient_id, &data),
            ));
            self.counters.relayed_messages += 1;
            self.counters.relayed_bytes += len;
        }
    }

    /// The four answers to `connect` (docs/PROTOCOL.md §5), and the blocking member to close (2c).
    fn on_connect(&mut self, id: ConnId, data: GroupData) -> (Answer, Option<ConnId>) {
        let GroupData {
            id: member_id,
            members,
        } = data;
        let Some(p) = self.peer(id) else {
            return (Answer::Bound, None);
        };
        let key = p.key.clone();
        let is_member = p.member_id.is_some();
        let Some(group) = self.groups.get(&key) else {
            // 1. No group: P founds it.
            self.groups.insert(key, Group { members: vec![id] });
            self.become_member(id, member_id);
            return (Answer::Connected, None);
        };
        if let [lone] = group.members[..] {
            // 2a. P is the lone member: take its new id (the original forgets to).
            if lone == id {
                self.become_member(id, member_id);
                return (Answer::Connected, None);
            }
            let lone_id = self.peer(lone).and_then(|m| m.member_id);
            if lone_id.is_some_and(|m| members.contains(&m)) {
                // 2b. P knows the lone member.
                self.add_member(&key, id, member_id);
                return (Answer::Connected, None);
            }
            if self.peer(id).is_some_and(|p| p.tried.contains(&lone)) {
                // 2c. The lone member could not bring P in: P replaces it.
                self.add_member(&key, id, member_id);
                self.remove_member(&key, lone);
                return (Answer::Connected, Some(lone));
            }
        }
        // 3. Members in common (P itself counts if it is a member, as in the original).
        if self.has_members_in_common(&key, &members) {
            if is_member {
                self.become_member(id, member_id);
            } else {
                self.add_member(&key, id, member_id);
            }
            return (Answer::Connected, None);
        }
        // 4. P is demoted if it was a member, then bound to a member chosen for it, unless
        // the group is full (ours: a newcomer, not a member of the mesh reconnecting, which
        // rule 3 took in above).
        if is_member {
            self.remove_member(&key, id);
        }
        let size = self.groups.get(&key).map_or(0, |g| g.members.len());
        if self.max_group_size > 0 && size >= self.max_group_size {
            return (Answer::Full, None);
        }
        if let Some(member) = self.choose_member(&key, id) {
            self.bind(id, member);
        }
        (Answer::Bound, None)
    }

    /// Whether `members` names a member of the group: the listed ids (at most
    /// [`MAX_CONNECT_MEMBERS`]) are sorted once and each member's id is looked up.
    fn has_members_in_common(&self, key: &[u8], members: &[u32]) -> bool {
        let Some(group) = self.groups.get(key) else {
            return false;
        };
        if members.is_empty() {
            return false;
        }
        // The list is sorted (it is bounded), not the group: a big group costs one pass.
        let mut listed = members.to_vec();
        listed.sort_unstable();
        group
            .members
            .iter()
            .filter_map(|&m| self.peer(m).and_then(|m| m.member_id))
            .any(|id| listed.binary_search(&id).is_ok())
    }

    /// Walks the members in join order, skipping those P tried: the first favored one wins,
    /// else the first one. When P tried them all, it starts the cycle again. The tried list is
    /// sorted for the walk, so that a joiner retrying through a big group costs the group's
    /// size (times a logarithm), not its square.
    fn choose_member(&mut self, key: &[u8], joiner: ConnId) -> Option<ConnId> {
        let group = self.groups.get(key)?;
        let p = self.peers.get(joiner.slot as usize)?.as_ref()?;
        let mut tried = p.tried.clone();
        tried.sort_unstable();
        let pick = |tried: &[ConnId]| {
            let mut first = None;
            let untried = group
                .members
                .iter()
                .filter(|m| tried.binary_search(m).is_err());
            for &m in untried {
                let favored = self.peer(m).is_some_and(|m| m.favored);
                if favored {
                    return Some(m);
                }
                first = first.or(Some(m));
            }
            first
        };
        if let Some(m) = pick(&tried) {
            return Some(m);
        }
        let m = pick(&[]);
        if let Some(p) = self.peer_mut(joiner) {
            p.tried.clear();
        }
        m
    }

    /// Binds joiner P to member M: the previous binding ends silently, P gets a fresh
    /// signaling id, M is remembered as tried.
    fn bind(&mut self, joiner: ConnId, member: ConnId) {
        let Some(p) = self.peer_mut(joiner) else {
            return;
        };
        let previous = p.binding.take();
        let old_id = p.signaling_id;
        if let Some(b) = previous {
            if let Some(m) = self.peer_mut(b.member) {
                m.joiners.retain(|&j| j != joiner);
            }
        }
        // Drawn before the old one is released, so S is always new (§3 "drawn afresh"): the
        // previous member, if chosen again, can never reach P with the old S.
        let fresh = self.ids.draw(joiner);
        self.ids.release(old_id);
        let members_now = self
            .peer(member)
            .and_then(|m| self.groups.get(&m.key))
            .map_or(0, |g| g.members.len());
        if let Some(m) = self.peer_mut(member) {
            m.joiners.push(joiner);
        }
        let Some(p) = self.peer_mut(joiner) else {
            return;
        };
        p.signaling_id = fresh;
        // Tried members that have closed stay in the list until the cycle restarts; prune them
        // when the list outgrows the group so it stays bounded whatever the churn. Demoted ones
        // stay: they are still tried (§3) if they become members again.
        let mut tried = std::mem::take(&mut p.tried);
        if tried.len() > members_now {
            tried.retain(|&t| self.peer(t).is_some());
        }
        tried.push(member);
        if let Some(p) = self.peer_mut(joiner) {
            p.tried = tried;
            p.binding = Some(Binding {
                member,
                to_member: true,
                to_joiner: true,
            });
        }
    }

    fn add_member(&mut self, key: &[u8], id: ConnId, member_id: u32) {
        if let Some(g) = self.groups.get_mut(key) {
            if !g.members.contains(&id) {
                g.members.push(id);
            }
        }
        self.become_member(id, member_id);
    }

    fn become_member(&mut self, id: ConnId, member_id: u32) {
        if let Some(p) = self.peer_mut(id) {
            p.member_id = Some(member_id);
            p.tried.clear();
        }
    }

    /// Removes `id` from the group of `key` (the peer's `member_id` is the caller's business);
    /// a group left empty is deleted, so its key is free again.
    fn remove_member(&mut self, key: &[u8], id: ConnId) {
        if let Some(g) = self.groups.get_mut(key) {
            g.members.retain(|&m| m != id);
            if g.members.is_empty() {
                self.groups.remove(key);
            }
        }
        if let Some(p) = self.peer_mut(id) {
            p.member_id = None;
        }
    }

    fn peer(&self, id: ConnId) -> Option<&Peer> {
        self.peers
            .get(id.slot as usize)?
            .as_ref()
            .filter(|p| p.id == id)
    }

    fn peer_mut(&mut self, id: ConnId) -> Option<&mut Peer> {
        self.peers
            .get_mut(id.slot as usize)?
            .as_mut()
            .filter(|p| p.id == id)
    }

    fn take_peer(&mut self, id: ConnId) -> Option<Peer> {
        let slot = self.peers.get_mut(id.slot as usize)?;
        if slot.as_ref().is_some_and(|p| p.id == id) {
            self.peer_count -= 1;
            slot.take()
        } else {
            None
        }
    }

    /// Checks the hub's internal consistency; panics with a description when it is broken.
    /// For tests and fuzzing.
    #[doc(hidden)]
    pub fn assert_invariants(&self) {
        let mut live = 0;
        for p in self.peers.iter().flatten() {
            live += 1;
            assert_eq!(
                self.ids.get(p.signaling_id),
                Some(p.id),
                "id map of {:?}",
                p.id
            );
            assert!((1..ids::ID_LIMIT).contains(&p.signaling_id));
            let in_group = self
                .groups
                .get(&p.key)
                .is_some_and(|g| g.members.contains(&p.id));
            assert_eq!(p.member_id.is_some(), in_group, "membership of {:?}", p.id);
            if let Some(b) = p.binding {
                let m = self.peer(b.member).expect("binding to a gone member");
                assert!(m.joiners.contains(&p.id), "joiner list of {:?}", b.member);
                assert_ne!(b.member, p.id, "self binding");
            }
            for &j in &p.joiners {
                let jp = self.peer(j).expect("gone joiner listed");
                assert_eq!(jp.binding.map(|b| b.member), Some(p.id));
            }
        }
        assert_eq!(live, self.peer_count);
        assert_eq!(self.ids.len(), self.peer_count);
        for (key, g) in &self.groups {
            assert!(!g.members.is_empty(), "empty group");
            for &m in &g.members {
                let p = self.peer(m).expect("gone member in a group");
                assert_eq!(&p.key, key);
            }
        }
    }
}
