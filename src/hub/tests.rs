//! Unit tests of the hub (docs/PROTOCOL.md §3 to §6), with no socket and no clock.
//!
//! A [`World`] wraps a [`Hub`]: it encodes the client's messages with prost, runs one event,
//! checks the hub's invariants and the effects (every `Send` is a canonical `Message` to a
//! peer that is still open, content never carries `lastData`), and hands the effects back
//! decoded as [`Out`] values, so tests compare whole effect lists.

use std::collections::HashSet;

use super::*;

/// One effect, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Out {
    Send(ConnId, Type),
    Close(ConnId, CloseReason),
}

fn answer(to: ConnId, connected: bool) -> Out {
    Out::Send(to, Type::Connected(connected))
}

/// The content `to` receives: the server rewrites the ids and never sets `lastData`.
fn got(to: ConnId, sender_id: u32, recipient_id: u32, data: &str) -> Out {
    Out::Send(
        to,
        Type::Content(content_msg(sender_id, recipient_id, data, false)),
    )
}

fn heartbeat(to: ConnId) -> Out {
    Out::Send(to, Type::Heartbeat(true))
}

fn closed(to: ConnId, reason: CloseReason) -> Out {
    Out::Close(to, reason)
}

fn content_msg(sender_id: u32, recipient_id: u32, data: &str, last_data: bool) -> Content {
    Content {
        sender_id,
        recipient_id,
        last_data,
        data: Bytes::copy_from_slice(data.as_bytes()),
    }
}

fn encode(t: Type) -> Bytes {
    Bytes::from(Message { r#type: Some(t) }.encode_to_vec())
}

fn conn(slot: u32, generation: u32) -> ConnId {
    ConnId { slot, generation }
}

/// A hub and the connections the test driver considers open.
struct World {
    hub: Hub,
    next_slot: u32,
    /// Opened and neither closed by the hub nor reported gone: the only valid `Send` targets.
    live: HashSet<ConnId>,
}

impl World {
    fn new() -> Self {
        Self::with_seed(1)
    }

    fn with_seed(seed: u64) -> Self {
        Self {
            hub: Hub::new(seed),
            next_slot: 0,
            live: HashSet::new(),
        }
    }

    /// Runs one event, checks the hub and its effects, and returns them decoded.
    fn step(&mut self, event: impl FnOnce(&mut Hub, &mut Vec<Effect>)) -> Vec<Out> {
        let mut effects = Vec::new();
        event(&mut self.hub, &mut effects);
        self.hub.assert_invariants();
        let outs = effects.into_iter().map(|e| self.check(e)).collect();
        assert_eq!(self.hub.peer_count(), self.live.len(), "peer count");
        outs
    }

    /// Checks one effect, in order: a `Send` after the `Close` of its target is a bug.
    fn check(&mut self, effect: Effect) -> Out {
        match effect {
            Effect::Send(to, bytes) => {
                assert!(self.live.contains(&to), "send to a closed peer {to:?}");
                let msg = Message::decode(bytes.clone()).expect("server sent a bad message");
                let t = msg.r#type.expect("server sent an empty message");
                // Canonical proto3 encoding: `connected: false` is `20 00`, zeros are absent.
                assert_eq!(encode(t.clone()), bytes, "encoding of {t:?}");
                match &t {
                    Type::Content(c) => assert!(!c.last_data, "lastData forwarded"),
                    Type::Connect(_) => panic!("server sent a connect"),
                    Type::Heartbeat(h) => assert!(*h, "server heartbeat is true"),
                    Type::Connected(_) => {}
                }
                Out::Send(to, t)
            }
            Effect::Close(to, reason) => {
                self.live.remove(&to);
                assert!(self.hub.peer(to).is_none(), "closed peer still known");
                Out::Close(to, reason)
            }
        }
    }

    /// Opens a peer on a new slot; the key must be accepted.
    fn open(&mut self, key: &str, favored: bool) -> ConnId {
        let id = conn(self.next_slot, 0);
        self.next_slot += 1;
        assert_eq!(self.open_at(id, key.as_bytes(), favored), []);
        id
    }

    fn open_at(&mut self, id: ConnId, key: &[u8], favored: bool) -> Vec<Out> {
        self.next_slot = self.next_slot.max(id.slot + 1);
        self.live.insert(id);
        self.step(|hub, out| hub.on_open(id, key, favored, out))
    }

    fn raw(&mut self, p: ConnId, frame: &[u8]) -> Vec<Out> {
        let frame = Bytes::copy_from_slice(frame);
        self.step(|hub, out| hub.on_message(p, frame, out))
    }

    fn send(&mut self, p: ConnId, t: Type) -> Vec<Out> {
        self.raw(p, &encode(t))
    }

    fn connect(&mut self, p: ConnId, id: u32, members: &[u32]) -> Vec<Out> {
        let data = GroupData {
            id,
            members: members.to_vec(),
        };
        self.send(p, Type::Connect(data))
    }

    /// Sends `connect` and returns the answer, which must be the only effect.
    fn join(&mut self, p: ConnId, id: u32, members: &[u32]) -> bool {
        match self.connect(p, id, members)[..] {
            [Out::Send(to, Type::Connected(b))] if to == p => b,
            ref other => panic!("connect of {p:?} gave {other:?}"),
        }
    }

    fn content(&mut self, p: ConnId, recipient_id: u32, data: &str, last: bool) -> Vec<Out> {
        self.send(p, Type::Content(content_msg(0, recipient_id, data, last)))
    }

    fn heartbeat(&mut self, p: ConnId, value: bool) -> Vec<Out> {
        self.send(p, Type::Heartbeat(value))
    }

    fn tick(&mut self, p: ConnId) -> Vec<Out> {
        self.step(|hub, out| hub.on_heartbeat_due(p, out))
    }

    /// The connection went away (the driver reports it).
    fn gone(&mut self, p: ConnId) -> Vec<Out> {
        self.live.remove(&p);
        self.step(|hub, out| hub.on_close(p, out))
    }

    /// The driver closes the connection through the hub.
    fn kick(&mut self, p: ConnId, reason: CloseReason) -> Vec<Out> {
        self.step(|hub, out| hub.close(p, reason, out))
    }

    /// Opens peers on `key` that all become members, in this order: the first founds the
    /// group, each next one lists the founder's id.
    fn group<const N: usize>(&mut self, key: &str, members: [(u32, bool); N]) -> [ConnId; N] {
        let peers = members.map(|(_, favored)| self.open(key, favored));
        for (i, (&p, (id, _))) in peers.iter().zip(members).enumerate() {
            let known: &[u32] = if i == 0 { &[] } else { &[members[0].0] };
            assert!(self.join(p, id, known), "member {i} of {key}");
        }
        assert_eq!(self.members(key), peers);
        peers
    }

    /// Opens a peer on `key` and makes it a joiner (`connected: false`) with an empty list.
    fn joiner(&mut self, key: &str, id: u32) -> ConnId {
        let p = self.open(key, false);
        assert!(!self.join(p, id, &[]));
        p
    }

    fn peer(&self, p: ConnId) -> &Peer {
        self.hub.peer(p).expect("peer is live")
    }

    /// The current signaling id S of a live peer.
    fn sid(&self, p: ConnId) -> u32 {
        self.peer(p).signaling_id
    }

    fn bound_to(&self, p: ConnId) -> Option<ConnId> {
        self.peer(p).binding.map(|b| b.member)
    }

    fn member_id(&self, p: ConnId) -> Option<u32> {
        self.peer(p).member_id
    }

    fn members(&self, key: &str) -> Vec<ConnId> {
        self.hub
            .groups
            .get(key.as_bytes())
            .map_or_else(Vec::new, |g| g.members.clone())
    }
}

// ---------------------------------------------------------------------------------------------
// §5 rule 1: founding a group

#[test]
fn first_connect_founds_the_group_whatever_the_members() {
    // Rule 1: with no group for the key, connect answers true and P is the only member.
    let lists: &[&[u32]] = &[&[], &[5], &[5, 6, 7], &[0]];
    for &members in lists {
        let mut w = World::new();
        let p = w.open("k", false);
        assert!(w.join(p, 42, members), "{members:?}");
        assert_eq!(w.members("k"), [p]);
        assert_eq!(w.member_id(p), Some(42));
        assert_eq!(w.hub.group_count(), 1);
    }
}

#[test]
fn five_connects_from_the_founder_all_answer_true() {
    // Rules 1 and 2a: the founder connecting again and again always gets true, alone.
    let mut w = World::new();
    let p = w.open("k", false);
    for (i, members) in [&[][..], &[1], &[9, 8], &[], &[3]].into_iter().enumerate() {
        assert!(w.join(p, 10 + i as u32, members), "connect {i}");
        assert_eq!(w.members("k"), [p]);
        assert_eq!(w.member_id(p), Some(10 + i as u32));
    }
}

#[test]
fn founding_keeps_a_binding_and_clears_tried() {
    // Rule 1: a joiner whose group vanished founds it again; tried is cleared, the binding lives.
    let mut w = World::new();
    let [a, b] = w.group("k", [(1, false), (2, false)]);
    let p = w.joiner("k", 3);
    assert_eq!(w.bound_to(p), Some(a));
    // A is demoted (bound to B), then B leaves: the group is gone, A and P are still open.
    assert!(!w.join(a, 1, &[99]));
    let sa = w.sid(a);
    assert_eq!(w.gone(b), [got(a, 0, sa, "")]);
    assert_eq!(w.hub.group_count(), 0);
    assert!(w.join(p, 3, &[]));
    assert_eq!(w.members("k"), [p]);
    assert!(w.peer(p).tried.is_empty());
    let sp = w.sid(p);
    assert_eq!(w.content(p, 0, "offer", false), [got(a, sp, 0, "offer")]);
    assert_eq!(w.content(a, sp, "answer", false), [got(p, 0, sp, "answer")]);
}

// ---------------------------------------------------------------------------------------------
// §5 rule 2: a group with one member

#[test]
fn lone_member_reconnecting_takes_its_new_id() {
    // Rule 2a: the lone member's new id replaces the old one (the original forgot to).
    for (listed, expected) in [(9, true), (1, false)] {
        let mut w = World::new();
        let [a] = w.group("k", [(1, false)]);
        assert!(w.join(a, 9, &[]));
        assert_eq!(w.member_id(a), Some(9));
        let p = w.open("k", false);
        assert_eq!(w.join(p, 2, &[listed]), expected, "listing {listed}");
        if expected {
            assert_eq!(w.members("k"), [a, p]);
        } else {
            assert_eq!(w.members("k"), [a]);
            assert_eq!(w.bound_to(p), Some(a));
        }
    }
}

#[test]
fn joiner_listing_the_lone_member_is_added() {
    // Rule 2b: members containing the lone member's id adds P, wherever the id is in the list.
    let lists: &[&[u32]] = &[&[1], &[7, 1], &[1, 1], &[3, 4, 1]];
    for &members in lists {
        let mut w = World::new();
        let [a] = w.group("k", [(1, false)]);
        let p = w.open("k", false);
        assert!(w.join(p, 2, members), "{members:?}");
        assert_eq!(w.members("k"), [a, p]);
        assert_eq!(w.member_id(p), Some(2));
    }
}

#[test]
fn knowing_the_lone_member_wins_over_having_tried_it() {
    // Rule 2b before 2c: the Netflux flow (false, link up, connect again listing M) closes no one.
    let mut w = World::new();
    let [a] = w.group("k", [(1, false)]);
    let p = w.joiner("k", 2);
    assert_eq!(w.peer(p).tried, [a]);
    assert!(w.join(p, 2, &[1]));
    assert_eq!(w.members("k"), [a, p]);
    assert!(w.peer(p).tried.is_empty());
}

#[test]
fn blocking_lone_member_is_replaced() {
    // Rule 2c: true to P, then Close 4744 for the lone member, then its disconnect notes.
    // Rows: did the member end its direction to P with lastData before?
    for member_ended in [false, true] {
        let mut w = World::new();
        let [a] = w.group("k", [(1, false)]);
        let p = w.joiner("k", 2);
        let q = w.joiner("k", 3); // another joiner bound to A, direction live
        let (sp, sq) = (w.sid(p), w.sid(q));
        if member_ended {
            assert_eq!(w.content(a, sp, "bye", true), [got(p, 0, sp, "bye")]);
        }
        let mut expected = vec![answer(p, true), closed(a, CloseReason::BlockingMember)];
        if !member_ended {
            expected.push(got(p, 0, sp, ""));
        }
        expected.push(got(q, 0, sq, ""));
        assert_eq!(
            w.connect(p, 2, &[]),
            expected,
            "member ended: {member_ended}"
        );
        assert_eq!(CloseReason::BlockingMember.close_code(), 4744);
        assert_eq!(w.members("k"), [p]);
        assert_eq!(w.member_id(p), Some(2));
        assert!(w.peer(p).tried.is_empty());
        assert_eq!(w.bound_to(p), None);
        // The binding ended with A: P's content goes nowhere now.
        assert_eq!(w.content(p, 0, "late", false), []);
    }
}

#[test]
fn blocking_member_is_replaced_even_when_no_longer_bound() {
    // Rule 2c looks at tried, not at the binding: P tried A, then B; B left; A is blocking.
    let mut w = World::new();
    let [a, b] = w.group("k", [(1, false), (2, false)]);
    let p = w.joiner("k", 3);
    assert_eq!(w.bound_to(p), Some(a));
    assert!(!w.join(p, 3, &[]));
    assert_eq!(w.bound_to(p), Some(b));
    let sp = w.sid(p);
    assert_eq!(w.gone(b), [got(p, 0, sp, "")]);
    assert_eq!(w.members("k"), [a]);
    // P is bound to no one: only the answer and A's close, no note for P.
    assert_eq!(
        w.connect(p, 3, &[]),
        [answer(p, true), closed(a, CloseReason::BlockingMember)]
    );
    assert_eq!(w.members("k"), [p]);
}

#[test]
fn untried_lone_member_is_not_blocking() {
    // Rule 2c needs P to have tried the lone member: a first connect is rule 4 (false, bound).
    let mut w = World::new();
    let [a] = w.group("k", [(1, false)]);
    let p = w.open("k", false);
    assert_eq!(w.connect(p, 2, &[]), [answer(p, false)]);
    assert_eq!(w.members("k"), [a]);
    assert_eq!(w.bound_to(p), Some(a));
}

// ---------------------------------------------------------------------------------------------
// §5 rules 3 and 4: members in common, or demotion and binding

#[test]
fn members_in_common_add_the_peer() {
    // Rule 3: one shared id among G's member ids is enough; none sends P to rule 4.
    let rows: &[(&[u32], bool)] = &[
        (&[1], true),
        (&[3], true),
        (&[9, 2], true),
        (&[1, 2, 3], true),
        (&[], false),
        (&[9], false),
        (&[4, 5], false),
        (&[0], false),
    ];
    for &(members, expected) in rows {
        let mut w = World::new();
        let group = w.group("k", [(1, false), (2, false), (3, false)]);
        let p = w.open("k", false);
        assert_eq!(w.join(p, 7, members), expected, "{members:?}");
        if expected {
            assert_eq!(w.members("k"), [&group[..], &[p]].concat());
            assert_eq!(w.member_id(p), Some(7));
        } else {
            assert_eq!(w.members("k"), group);
            assert_eq!(w.member_id(p), None);
            assert_eq!(w.bound_to(p), Some(group[0]));
        }
    }
}

#[test]
fn a_members_own_old_id_counts_as_in_common() {
    // Rule 3 as in the original: P's own (old) member id is among G's ids, and it is replaced.
    let mut w = World::new();
    let [a, p] = w.group("k", [(1, false), (5, false)]);
    assert!(w.join(p, 7, &[5]));
    assert_eq!(w.members("k"), [a, p]);
    assert_eq!(w.member_id(p), Some(7));
    // A later joiner listing the new id gets in; one listing only the old id does not.
    let q = w.open("k", false);
    assert!(!w.join(q, 8, &[5]));
    assert!(w.join(q, 8, &[7]));
    assert_eq!(w.members("k"), [a, p, q]);
}

#[test]
fn member_without_members_in_common_is_demoted_and_bound() {
    // Rule 4: a member listing no member id leaves the group, is bound to another member, false.
    let mut w = World::new();
    let [a, b, c] = w.group("k", [(1, false), (2, false), (3, false)]);
    assert_eq!(w.connect(b, 2, &[99]), [answer(b, false)]);
    assert_eq!(w.members("k"), [a, c]);
    assert_eq!(w.member_id(b), None);
    assert_eq!(w.bound_to(b), Some(a));
    // B's old id no longer counts: a joiner listing only 2 is not let in.
    let p = w.open("k", false);
    assert!(!w.join(p, 4, &[2]));
    assert_eq!(w.members("k"), [a, c]);
}

#[test]
fn demoted_member_is_never_bound_to_itself() {
    // Rule 4: P is out of G before the choice, even when it was the favored first member.
    let mut w = World::new();
    let [a, b] = w.group("k", [(1, true), (2, false)]);
    assert!(!w.join(a, 1, &[42]));
    assert_eq!(w.members("k"), [b]);
    assert_eq!(w.bound_to(a), Some(b));
}

// ---------------------------------------------------------------------------------------------
// §5 choosing M

#[test]
fn member_choice_follows_join_order_favored_first_and_cycles() {
    // Choosing M: skip tried, first favored wins, else first in join order; all tried -> again.
    // Rows: favored flags of members A, B, C and the members P is bound to on six connects.
    let rows: &[([bool; 3], [usize; 6])] = &[
        ([false, false, false], [0, 1, 2, 0, 1, 2]),
        ([false, true, false], [1, 0, 2, 1, 0, 2]),
        ([false, true, true], [1, 2, 0, 1, 2, 0]),
        ([true, false, true], [0, 2, 1, 0, 2, 1]),
        ([true, true, true], [0, 1, 2, 0, 1, 2]),
        ([false, false, true], [2, 0, 1, 2, 0, 1]),
    ];
    for &(favored, expected) in rows {
        let mut w = World::new();
        let group = w.group("k", [(1, favored[0]), (2, favored[1]), (3, favored[2])]);
        let p = w.open("k", false);
        let chosen: Vec<usize> = (0..6)
            .map(|_| {
                assert!(!w.join(p, 9, &[]));
                let m = w.bound_to(p).unwrap();
                group.iter().position(|&g| g == m).unwrap()
            })
            .collect();
        assert_eq!(chosen, expected, "favored {favored:?}");
    }
}

#[test]
fn tried_is_keyed_by_connection_not_id() {
    // §3: two members claiming the same id are both reached (the original reached only one).
    let mut w = World::new();
    let [a, b] = w.group("k", [(1, false), (1, false)]);
    let p = w.joiner("k", 2);
    assert_eq!(w.bound_to(p), Some(a));
    assert!(!w.join(p, 2, &[]));
    assert_eq!(w.bound_to(p), Some(b));
    assert!(!w.join(p, 2, &[]));
    assert_eq!(w.bound_to(p), Some(a));
}

#[test]
fn tried_is_cleared_when_the_peer_becomes_a_member() {
    // §3: tried counts since P last became a member; once demoted, P starts from the first again.
    let mut w = World::new();
    let [a, b] = w.group("k", [(1, false), (2, false)]);
    let p = w.joiner("k", 3);
    assert_eq!(w.bound_to(p), Some(a));
    assert!(w.join(p, 3, &[1]));
    assert!(w.peer(p).tried.is_empty());
    assert!(!w.join(p, 3, &[99]));
    assert_eq!(w.bound_to(p), Some(a), "A again, not B");
    assert_eq!(w.members("k"), [a, b]);
}

#[test]
fn tried_keeps_members_that_were_demoted() {
    // §3: tried holds every member bound to since P last became a member, also those demoted
    // since (they may come back); only closed connections may be forgotten.
    let mut w = World::new();
    let [a, b, c] = w.group("k", [(1, false), (2, false), (3, false)]);
    let p = w.joiner("k", 9);
    assert!(!w.join(p, 9, &[]));
    assert_eq!(w.peer(p).tried, [a, b]);
    // A and B are demoted (each bound elsewhere); C is the lone member.
    assert!(!w.join(a, 1, &[99]));
    assert!(!w.join(b, 2, &[99]));
    assert_eq!(w.members("k"), [c]);
    assert!(!w.join(p, 9, &[]));
    assert_eq!(w.bound_to(p), Some(c));
    assert_eq!(w.peer(p).tried, [a, b, c]);
    // A and B come back: P tried all three, so the cycle restarts with the first, C.
    assert!(w.join(a, 1, &[3]));
    assert!(w.join(b, 2, &[3]));
    assert_eq!(w.members("k"), [c, a, b]);
    assert!(!w.join(p, 9, &[]));
    assert_eq!(w.bound_to(p), Some(c));
}

#[test]
fn tried_forgets_closed_members_but_stays_correct() {
    // §3 with churn: closed members leave tried at some point, and the choice is unchanged.
    let mut w = World::new();
    let [founder] = w.group("k", [(1, false)]);
    let p = w.joiner("k", 9);
    for round in 0..20u32 {
        let m = w.open("k", false);
        assert!(w.join(m, 100 + round, &[1]));
        // P was bound to the founder, so the new member is the first one it has not tried.
        assert!(!w.join(p, 9, &[]));
        assert_eq!(w.bound_to(p), Some(m), "round {round}");
        let sp = w.sid(p);
        assert_eq!(w.gone(m), [got(p, 0, sp, "")]);
    }
    assert!(w.peer(p).tried.len() <= 3, "tried {:?}", w.peer(p).tried);
    assert!(w.peer(p).tried.contains(&founder));
    // The founder is the lone member again and P tried it: rule 2c makes it blocking.
    assert_eq!(
        w.connect(p, 9, &[]),
        [
            answer(p, true),
            closed(founder, CloseReason::BlockingMember)
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// §5 binding

#[test]
fn each_bind_draws_a_fresh_signaling_id() {
    // §3: a new S at every bind, in 1..2^31, unlike the previous one, which is released.
    let mut w = World::new();
    w.group("k", [(1, false), (2, false), (3, false)]);
    let p = w.open("k", false);
    let mut previous = w.sid(p);
    let mut seen = HashSet::from([previous]);
    for i in 0..12 {
        assert!(!w.join(p, 9, &[]));
        let s = w.sid(p);
        assert!((1..ids::ID_LIMIT).contains(&s), "S = {s}");
        assert_ne!(s, previous, "bind {i}");
        assert_eq!(w.hub.ids.get(previous), None, "old S released");
        assert_eq!(w.hub.ids.get(s), Some(p));
        assert!(seen.insert(s), "S reused");
        previous = s;
    }
}

#[test]
fn joiner_content_reaches_its_member_whatever_the_recipient() {
    // Joiner -> member: M receives content {senderId: S, recipientId: 0, data}, any recipientId.
    let mut w = World::new();
    let [a, b] = w.group("k", [(1, false), (2, false)]);
    let p = w.joiner("k", 3);
    let q = w.joiner("k", 4);
    assert!(!w.join(q, 4, &[])); // Q now bound to B
    let sp = w.sid(p);
    let recipients = [0, 1, 12345, sp, w.sid(a), w.sid(b), w.sid(q), u32::MAX];
    for rid in recipients {
        let sent = Type::Content(Content {
            sender_id: 777, // ignored: the server writes S
            recipient_id: rid,
            last_data: false,
            data: Bytes::from_static(b"offer"),
        });
        assert_eq!(
            w.send(p, sent),
            [got(a, sp, 0, "offer")],
            "recipientId {rid}"
        );
    }
}

#[test]
fn member_content_reaches_the_joiner_named_by_recipient_id() {
    // Member -> joiner: content {recipientId: S} from M reaches P as {senderId: 0, recipientId: S}.
    let mut w = World::new();
    let [a] = w.group("k", [(1, false)]);
    let p = w.joiner("k", 2);
    let sp = w.sid(p);
    let sent = Type::Content(Content {
        sender_id: 55,
        recipient_id: sp,
        last_data: false,
        data: Bytes::from_static(b"answer"),
    });
    assert_eq!(w.send(a, sent), [got(p, 0, sp, "answer")]);
    assert_eq!(w.content(a, sp, "", false), [got(p, 0, sp, "")]);
}

#[test]
fn member_content_for_another_recipient_goes_nowhere() {
    // Content from M whose recipientId is not the S of a joiner bound to M reaches no one.
    let mut w = World::new();
    let [a, b] = w.group("k", [(1, false), (2, false)]);
    let p = w.joiner("k", 3); // bound to A
    let q = w.joiner("k", 4); // bound to A
    assert!(!w.join(q, 4, &[])); // now bound to B
    let idle = w.open("k", false); // not bound at all
    let rows = [
        ("zero", 0),
        ("unused", 12345),
        ("A's own S", w.sid(a)),
        ("S of B's joiner", w.sid(q)),
        ("S of an unbound peer", w.sid(idle)),
        ("B's S", w.sid(b)),
        ("P's Netflux id", 3),
    ];
    for (what, rid) in rows {
        assert_eq!(w.content(a, rid, "x", false), [], "{what}");
    }
    // Still routed for P.
    let sp = w.sid(p);
    assert_eq!(w.content(a, sp, "x", false), [got(p, 0, sp, "x")]);
}

#[test]
fn last_data_ends_only_its_own_direction() {
    // lastData: that message is forwarded (without the flag), then only its direction ends.
    for joiner_ends in [true, false] {
        let mut w = World::new();
        let [a] = w.group("k", [(1, false)]);
        let p = w.joiner("k", 2);
        let sp = w.sid(p);
        if joiner_ends {
            assert_eq!(w.content(p, 0, "last", true), [got(a, sp, 0, "last")]);
            assert_eq!(w.content(p, 0, "more", false), []);
            assert_eq!(w.content(p, 0, "more", true), []);
            assert_eq!(w.content(a, sp, "still", false), [got(p, 0, sp, "still")]);
        } else {
            assert_eq!(w.content(a, sp, "last", true), [got(p, 0, sp, "last")]);
            assert_eq!(w.content(a, sp, "more", false), []);
            assert_eq!(w.content(p, 0, "still", false), [got(a, sp, 0, "still")]);
        }
        let b = w.peer(p).binding.unwrap();
        assert_eq!((b.to_member, b.to_joiner), (!joiner_ends, joiner_ends));
    }
}

#[test]
fn last_data_with_empty_data_is_forwarded_as_empty_content() {
    // lastData is never forwarded: an empty last message arrives as an empty content.
    let mut w = World::new();
    let [a] = w.group("k", [(1, false)]);
    let p = w.joiner("k", 2);
    let sp = w.sid(p);
    assert_eq!(w.content(p, 0, "", true), [got(a, sp, 0, "")]);
    assert_eq!(w.content(a, sp, "", true), [got(p, 0, sp, "")]);
    // Both directions are over: nothing passes, and a disconnect sends no note.
    assert_eq!(w.content(p, 0, "x", false), []);
    assert_eq!(w.content(a, sp, "x", false), []);
    assert_eq!(w.gone(p), []);
}

#[test]
fn binding_survives_becoming_a_member() {
    // §5: a joiner answered false then true still finishes its exchange with M, both ways.
    let mut w = World::new();
    let [a] = w.group("k", [(1, false)]);
    let p = w.joiner("k", 2);
    let sp = w.sid(p);
    assert!(w.join(p, 2, &[1]));
    assert_eq!(w.sid(p), sp, "becoming a member keeps S");
    assert_eq!(
        w.content(p, 0, "candidate", false),
        [got(a, sp, 0, "candidate")]
    );
    assert_eq!(
        w.content(a, sp, "candidate", true),
        [got(p, 0, sp, "candidate")]
    );
    assert_eq!(w.content(p, 0, "done", true), [got(a, sp, 0, "done")]);
}

#[test]
fn rebinding_is_silent_and_cuts_the_old_member_off() {
    // A new bind ends the old binding with no effect for the old member, which loses P.
    let mut w = World::new();
    let [a, b] = w.group("k", [(1, false), (2, false)]);
    let p = w.joiner("k", 3);
    let old = w.sid(p);
    assert_eq!(w.connect(p, 3, &[]), [answer(p, false)]);
    assert_eq!(w.bound_to(p), Some(b));
    let new = w.sid(p);
    assert_eq!(w.content(a, old, "stale", false), []);
    assert_eq!(w.content(a, new, "stale", false), []);
    assert!(w.peer(a).joiners.is_empty());
    assert_eq!(w.content(p, 0, "hi", false), [got(b, new, 0, "hi")]);
    assert_eq!(w.content(b, new, "hi", false), [got(p, 0, new, "hi")]);
    // A going away tells P nothing; B going away does.
    assert_eq!(w.gone(a), []);
    assert_eq!(w.gone(b), [got(p, 0, new, "")]);
}

#[test]
fn rebinding_restores_directions_ended_by_last_data() {
    // A new bind starts two live directions, even to the same member again.
    let mut w = World::new();
    let [a, b] = w.group("k", [(1, false), (2, false)]);
    let p = w.joiner("k", 3);
    let s1 = w.sid(p);
    assert_eq!(w.content(p, 0, "end", true), [got(a, s1, 0, "end")]);
    assert_eq!(w.content(a, s1, "end", true), [got(p, 0, s1, "end")]);
    assert!(!w.join(p, 3, &[]));
    assert_eq!(w.bound_to(p), Some(b));
    assert!(!w.join(p, 3, &[]));
    assert_eq!(w.bound_to(p), Some(a));
    let s3 = w.sid(p);
    assert_eq!(w.content(p, 0, "again", false), [got(a, s3, 0, "again")]);
    assert_eq!(w.content(a, s3, "again", false), [got(p, 0, s3, "again")]);
    assert_eq!(w.content(a, s1, "old", false), []);
}

#[test]
fn two_joiners_through_one_member_are_routed_by_recipient_id() {
    // One member, two joiners: each reply reaches only the joiner whose S it names.
    let mut w = World::new();
    let [a] = w.group("k", [(1, false)]);
    let p = w.joiner("k", 2);
    let q = w.joiner("k", 3);
    let (sp, sq) = (w.sid(p), w.sid(q));
    assert_ne!(sp, sq);
    assert_eq!(w.content(p, 0, "from p", false), [got(a, sp, 0, "from p")]);
    assert_eq!(w.content(q, 0, "from q", false), [got(a, sq, 0, "from q")]);
    assert_eq!(w.content(a, sp, "to p", false), [got(p, 0, sp, "to p")]);
    assert_eq!(w.content(a, sq, "to q", false), [got(q, 0, sq, "to q")]);
    // Ending one joiner's direction leaves the other's alone.
    assert_eq!(w.content(a, sp, "bye", true), [got(p, 0, sp, "bye")]);
    assert_eq!(w.content(a, sp, "x", false), []);
    assert_eq!(w.content(a, sq, "x", false), [got(q, 0, sq, "x")]);
}

#[test]
fn member_and_joiner_roles_are_independent() {
    // A peer bound as a joiner to M and with its own joiner J routes both ways in each role.
    let mut w = World::new();
    let [m, x] = w.group("k", [(1, false), (2, false)]);
    let j = w.joiner("k", 3); // bound to M
    assert!(!w.join(j, 3, &[]));
    assert_eq!(w.bound_to(j), Some(x), "J is bound to X");
    // X becomes a joiner too, bound to M, while J stays bound to X.
    assert!(!w.join(x, 2, &[99]));
    assert_eq!(w.bound_to(x), Some(m));
    let (sx, sj) = (w.sid(x), w.sid(j));
    // X -> J by recipientId also goes to M, X's own member (whatever the recipientId).
    assert_eq!(
        w.content(x, sj, "both", false),
        [got(m, sx, 0, "both"), got(j, 0, sj, "both")]
    );
    assert_eq!(w.content(x, 0, "to m", false), [got(m, sx, 0, "to m")]);
    assert_eq!(w.content(m, sx, "to x", false), [got(x, 0, sx, "to x")]);
    assert_eq!(w.content(j, 0, "to x", false), [got(x, sj, 0, "to x")]);
    // X ends its direction to M (joiner role); its direction to J (member role) still works.
    assert_eq!(w.content(x, 0, "end", true), [got(m, sx, 0, "end")]);
    assert_eq!(w.content(x, sj, "j", false), [got(j, 0, sj, "j")]);
    // X goes: J hears from X's member role; M hears nothing (X ended that direction).
    assert_eq!(w.gone(x), [got(j, 0, sj, "")]);
}

#[test]
fn content_without_a_binding_is_dropped() {
    // §7: content from a peer with no live direction is dropped silently.
    let mut w = World::new();
    let [a] = w.group("k", [(1, false)]);
    let lonely = w.open("k", false);
    let other = w.open("other", false);
    for p in [a, lonely, other] {
        assert_eq!(w.content(p, 0, "x", false), []);
        assert_eq!(w.content(p, 12345, "x", true), []);
    }
    assert_eq!(w.hub.peer_count(), 3);
}

// ---------------------------------------------------------------------------------------------
// §6 disconnects

/// The ways a peer goes away, all with the same notes for its partners.
#[derive(Debug, Clone, Copy)]
enum Exit {
    Gone,
    Kicked,
    Silent,
    Garbage,
}

impl Exit {
    const ALL: [Self; 4] = [Self::Gone, Self::Kicked, Self::Silent, Self::Garbage];

    /// Makes `p` go away and returns the effects of its last step, minus its own close.
    fn apply(self, w: &mut World, p: ConnId) -> Vec<Out> {
        let (mut outs, reason) = match self {
            Self::Gone => return w.gone(p),
            Self::Kicked => (w.kick(p, CloseReason::Shutdown), CloseReason::Shutdown),
            Self::Silent => {
                assert_eq!(w.tick(p), [heartbeat(p)]);
                assert_eq!(w.tick(p), [heartbeat(p)]);
                (w.tick(p), CloseReason::Heartbeat)
            }
            Self::Garbage => (w.raw(p, &[0xff]), CloseReason::BadMessage),
        };
        assert_eq!(outs.first(), Some(&closed(p, reason)), "{self:?}");
        outs.remove(0);
        outs
    }
}

#[test]
fn member_disconnect_notifies_joiners_with_a_live_direction() {
    // §6: each joiner whose member -> joiner direction is live gets {senderId: 0, recipientId: S}.
    for exit in Exit::ALL {
        let mut w = World::new();
        let [a, b] = w.group("k", [(1, false), (2, false)]);
        let p = w.joiner("k", 3);
        let q = w.joiner("k", 4);
        let r = w.joiner("k", 5);
        let (sp, sq) = (w.sid(p), w.sid(q));
        // R moves on to B. A ends its direction to Q; Q's direction to A stays live.
        assert!(!w.join(r, 5, &[]));
        assert_eq!(w.content(a, sq, "bye", true), [got(q, 0, sq, "bye")]);
        assert_eq!(w.content(q, 0, "hi", false), [got(a, sq, 0, "hi")]);
        assert_eq!(exit.apply(&mut w, a), [got(p, 0, sp, "")], "{exit:?}");
        assert_eq!(w.members("k"), [b]);
        assert_eq!(w.bound_to(p), None);
        assert_eq!(w.bound_to(q), None);
        assert_eq!(w.bound_to(r), Some(b));
        assert_eq!(w.content(p, 0, "x", false), []);
    }
}

#[test]
fn joiner_disconnect_notifies_its_member() {
    // §6: the member gets {senderId: S, recipientId: 0} unless the joiner ended with lastData.
    for exit in Exit::ALL {
        for joiner_ended in [false, true] {
            let mut w = World::new();
            let [a] = w.group("k", [(1, false)]);
            let p = w.joiner("k", 2);
            let sp = w.sid(p);
            if joiner_ended {
                assert_eq!(w.content(p, 0, "bye", true), [got(a, sp, 0, "bye")]);
            }
            let expected = if joiner_ended {
                vec![]
            } else {
                vec![got(a, sp, 0, "")]
            };
            assert_eq!(exit.apply(&mut w, p), expected, "{exit:?} {joiner_ended}");
            assert!(w.peer(a).joiners.is_empty());
            assert_eq!(w.hub.ids.get(sp), None, "S released");
            assert_eq!(w.content(a, sp, "x", false), []);
        }
    }
}

#[test]
fn disconnect_of_a_member_and_joiner_sends_both_notes() {
    // §6: a peer in both roles tells its member and its joiner, one note each.
    let mut w = World::new();
    let [m, x] = w.group("k", [(1, false), (2, false)]);
    let j = w.joiner("k", 3);
    assert!(!w.join(j, 3, &[])); // J bound to X
    assert!(!w.join(x, 2, &[99])); // X bound to M
    let (sx, sj) = (w.sid(x), w.sid(j));
    let mut notes = w.gone(x);
    notes.sort_by_key(|o| format!("{o:?}"));
    let mut expected = vec![got(m, sx, 0, ""), got(j, 0, sj, "")];
    expected.sort_by_key(|o| format!("{o:?}"));
    assert_eq!(notes, expected);
}

#[test]
fn empty_group_is_deleted_and_its_key_is_free() {
    // §6: the last member leaving deletes the group; the next connect founds it with true.
    let mut w = World::new();
    let [a, b] = w.group("k", [(1, false), (2, false)]);
    let idle = w.open("k", false);
    assert_eq!(w.gone(a), []);
    assert_eq!(w.hub.group_count(), 1);
    assert_eq!(
        w.kick(b, CloseReason::Shutdown),
        [closed(b, CloseReason::Shutdown)]
    );
    assert_eq!(w.hub.group_count(), 0);
    assert!(w.join(idle, 77, &[1, 2]));
    assert_eq!(w.members("k"), [idle]);
    assert_eq!(w.hub.group_count(), 1);
}

#[test]
fn keys_are_compared_byte_for_byte() {
    // §1: different bytes are different groups, even when they look alike.
    let mut w = World::new();
    let keys = ["k", "K", "k/", "/k", "k%20", "k "];
    for key in keys {
        let p = w.open(key, false);
        assert!(w.join(p, 1, &[]), "{key}");
    }
    assert_eq!(w.hub.group_count(), keys.len());
}

// ---------------------------------------------------------------------------------------------
// §4 heartbeats

#[test]
fn silent_peer_gets_two_heartbeats_then_is_closed() {
    // §4: ticks 1 and 2 send `08 01`, tick 3 closes with 4742 and tells the partners.
    let mut w = World::new();
    let [a] = w.group("k", [(1, false)]);
    let p = w.joiner("k", 2); // bound to A
    let q = w.joiner("k", 3); // bound to A
    let (sp, sq) = (w.sid(p), w.sid(q));
    assert_eq!(proto::HEARTBEAT, Bytes::from_static(&[0x08, 0x01]));
    // Q answers, so only A is silent.
    for _ in 0..2 {
        assert_eq!(w.tick(a), [heartbeat(a)]);
        assert_eq!(w.tick(q), [heartbeat(q)]);
        assert_eq!(w.heartbeat(q, true), []);
    }
    let mut outs = w.tick(a);
    assert_eq!(outs.remove(0), closed(a, CloseReason::Heartbeat));
    assert_eq!(outs, [got(p, 0, sp, ""), got(q, 0, sq, "")]);
    assert_eq!(CloseReason::Heartbeat.close_code(), 4742);
    assert_eq!(w.hub.group_count(), 0);
    // The hub forgot A: further events for it do nothing.
    assert_eq!(w.tick(a), []);
    assert_eq!(w.gone(a), []);
    // P never answered either: it is closed at its own third tick, telling no one.
    assert_eq!(w.tick(p), [heartbeat(p)]);
    assert_eq!(w.tick(p), [heartbeat(p)]);
    assert_eq!(w.tick(p), [closed(p, CloseReason::Heartbeat)]);
}

#[test]
fn any_client_heartbeat_resets_the_count() {
    // §4: heartbeat true or false sets missed to 0, so two more ticks are survived.
    for value in [true, false] {
        let mut w = World::new();
        let p = w.open("k", false);
        for _ in 0..5 {
            assert_eq!(w.tick(p), [heartbeat(p)]);
            assert_eq!(w.tick(p), [heartbeat(p)]);
            assert_eq!(w.heartbeat(p, value), [], "heartbeat {value}");
            assert_eq!(w.peer(p).missed, 0);
        }
        assert_eq!(w.tick(p), [heartbeat(p)]);
        assert_eq!(w.tick(p), [heartbeat(p)]);
        assert_eq!(w.tick(p), [closed(p, CloseReason::Heartbeat)]);
    }
}

#[test]
fn server_never_answers_a_client_heartbeat() {
    // §4: a client heartbeat gets no reply (Netflux would otherwise ping-pong).
    let mut w = World::new();
    let [a] = w.group("k", [(1, false)]);
    let p = w.joiner("k", 2);
    for _ in 0..10 {
        assert_eq!(w.heartbeat(p, true), []);
        assert_eq!(w.heartbeat(a, false), []);
    }
    // The raw bytes too: `08 01` and `08 00`.
    assert_eq!(w.raw(p, &[0x08, 0x01]), []);
    assert_eq!(w.raw(p, &[0x08, 0x00]), []);
}

#[test]
fn other_messages_do_not_reset_the_heartbeat_count() {
    // §4: only a heartbeat resets missed; content, connect and connected do not.
    let mut w = World::new();
    let [a] = w.group("k", [(1, false)]);
    let p = w.joiner("k", 2);
    let sp = w.sid(p);
    assert_eq!(w.tick(p), [heartbeat(p)]);
    assert_eq!(w.tick(p), [heartbeat(p)]);
    assert_eq!(w.content(p, 0, "x", false), [got(a, sp, 0, "x")]);
    assert!(w.join(p, 2, &[1]));
    assert_eq!(w.send(p, Type::Connected(true)), []);
    assert_eq!(w.peer(p).missed, 2);
    assert_eq!(
        w.tick(p),
        [closed(p, CloseReason::Heartbeat), got(a, sp, 0, "")]
    );
    assert_eq!(w.members("k"), [a]);
}

// ---------------------------------------------------------------------------------------------
// §7 and §2: bad input, decoding rules

#[test]
fn server_messages_have_the_exact_wire_bytes() {
    // §2: `connected` true/false, `heartbeat: true` and notes, byte for byte, zeros omitted.
    let mut hub = Hub::new(3);
    let mut out = Vec::new();
    let (a, p) = (conn(0, 0), conn(1, 0));
    hub.on_open(a, b"k", false, &mut out);
    hub.on_open(p, b"k", false, &mut out);
    let connect = |id: u8| Bytes::from(vec![0x1a, 0x02, 0x08, id]);
    hub.on_message(a, connect(1), &mut out);
    hub.on_message(p, connect(2), &mut out);
    hub.on_heartbeat_due(p, &mut out);
    hub.assert_invariants();
    assert_eq!(
        out,
        [
            Effect::Send(a, Bytes::from_static(&[0x20, 0x01])),
            Effect::Send(p, Bytes::from_static(&[0x20, 0x00])),
            Effect::Send(p, Bytes::from_static(&[0x08, 0x01])),
        ]
    );
    out.clear();
    let s = hub.peer(p).unwrap().signaling_id;
    // Content from P (lastData false, recipientId 7) to A, then P's disconnect note:
    // `12 len 08 S [22 len data]`, recipientId 0 and lastData absent.
    let content = [0x12, 0x07, 0x10, 0x07, 0x18, 0x00, 0x22, 0x01, b'd'];
    hub.on_message(p, Bytes::copy_from_slice(&content), &mut out);
    hub.on_close(p, &mut out);
    hub.assert_invariants();
    let mut sender = vec![0x08];
    prost::encoding::encode_varint(u64::from(s), &mut sender);
    let len = sender.len() as u8;
    let relayed = [&[0x12, len + 3][..], &sender, &[0x22, 0x01, b'd']].concat();
    let note = [&[0x12, len][..], &sender].concat();
    assert_eq!(
        out,
        [
            Effect::Send(a, Bytes::from(relayed)),
            Effect::Send(a, Bytes::from(note)),
        ]
    );
}

#[test]
fn connected_from_a_client_is_ignored() {
    // §7: a `connected` message from a client changes nothing and gets no answer.
    let mut w = World::new();
    let p = w.open("k", false);
    assert_eq!(w.send(p, Type::Connected(true)), []);
    assert_eq!(w.send(p, Type::Connected(false)), []);
    assert_eq!(w.raw(p, &[0x20, 0x01]), []);
    assert_eq!(w.member_id(p), None);
    assert_eq!(w.hub.group_count(), 0);
    assert_eq!(w.hub.peer_count(), 1);
}

#[test]
fn keys_are_checked_on_open() {
    // §1: an empty key or one over 512 bytes closes with 4741; 512 bytes and odd bytes are fine.
    let long = vec![b'k'; MAX_KEY_LEN];
    let too_long = vec![b'k'; MAX_KEY_LEN + 1];
    let rows: &[(&[u8], Option<CloseReason>)] = &[
        (b"", Some(CloseReason::KeyEmpty)),
        (&too_long, Some(CloseReason::KeyTooLong)),
        (&long, None),
        (b"a", None),
        (b"a/b/%D0%9F", None),
        (&[0xff, 0x00, 0x80], None),
    ];
    for &(key, reason) in rows {
        let mut w = World::new();
        let id = conn(0, 0);
        let outs = w.open_at(id, key, false);
        match reason {
            Some(reason) => {
                assert_eq!(outs, [closed(id, reason)], "key of {} bytes", key.len());
                assert_eq!(reason.close_code(), 4741);
                assert_eq!(w.hub.peer_count(), 0);
                // The refused connection is unknown to the hub.
                assert_eq!(w.raw(id, &[0x08, 0x01]), []);
                assert_eq!(w.tick(id), []);
            }
            None => {
                assert_eq!(outs, [], "key of {} bytes", key.len());
                assert!(w.join(id, 1, &[]));
                assert_eq!(&*w.peer(id).key, key);
            }
        }
    }
}

#[test]
fn undecodable_or_empty_messages_close_with_4743() {
    // §7: bytes that are no Message, or a Message with no oneof field, close the sender only.
    let rows: &[(&str, &[u8], CloseReason)] = &[
        ("zero bytes", &[], CloseReason::EmptyMessage),
        (
            "unknown varint field",
            &[0x28, 0x01],
            CloseReason::EmptyMessage,
        ),
        (
            "unknown bytes field",
            &[0x2a, 0x00],
            CloseReason::EmptyMessage,
        ),
        (
            "unknown fixed32",
            &[0x35, 1, 2, 3, 4],
            CloseReason::EmptyMessage,
        ),
        (
            "two unknowns",
            &[0x28, 0x01, 0x7a, 0x01, 0xaa],
            CloseReason::EmptyMessage,
        ),
        ("0xff", &[0xff], CloseReason::BadMessage),
        ("truncated varint", &[0x08], CloseReason::BadMessage),
        ("field number 0", &[0x00], CloseReason::BadMessage),
        (
            "length past the end",
            &[0x12, 0x05, 0x01],
            CloseReason::BadMessage,
        ),
        ("wire type 7", &[0x0f], CloseReason::BadMessage),
        ("wrong wire type", &[0x0a, 0x00], CloseReason::BadMessage),
        (
            "bad nested length",
            &[0x1a, 0x02, 0x12, 0x05],
            CloseReason::BadMessage,
        ),
        (
            "overlong varint",
            &[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            ],
            CloseReason::BadMessage,
        ),
        ("text", b"hello", CloseReason::BadMessage),
    ];
    for &(what, frame, reason) in rows {
        let mut w = World::new();
        let [a, b] = w.group("k", [(1, false), (2, false)]);
        let p = w.joiner("k", 3); // bound to A
        let sp = w.sid(p);
        assert_eq!(
            w.raw(p, frame),
            [closed(p, reason), got(a, sp, 0, "")],
            "{what}"
        );
        assert_eq!(reason.close_code(), 4743);
        // Nobody else is affected.
        assert_eq!(w.members("k"), [a, b]);
        assert_eq!(w.hub.peer_count(), 2);
        assert_eq!(w.raw(p, &[0x08, 0x01]), []);
    }
}

#[test]
fn unknown_fields_are_skipped() {
    // §2: unknown fields anywhere are skipped and the known ones still act.
    let mut w = World::new();
    let [a] = w.group("k", [(1, false)]);
    let p = w.open("k", false);
    assert_eq!(w.tick(p), [heartbeat(p)]);
    // An unknown varint, then heartbeat: resets missed, no answer.
    assert_eq!(w.raw(p, &[0x28, 0x01, 0x08, 0x01]), []);
    assert_eq!(w.peer(p).missed, 0);
    // Unknown fixed64 before a connect whose GroupData holds an unknown field 3 too.
    let frame = [
        0x39, 1, 2, 3, 4, 5, 6, 7, 8, // field 7, fixed64
        0x1a, 0x06, 0x08, 0x02, 0x18, 0x01, 0x10, 0x01, // connect {id 2, ?3: 1, members [1]}
    ];
    assert_eq!(w.raw(p, &frame), [answer(p, true)]);
    assert_eq!(w.member_id(p), Some(2));
    assert_eq!(w.members("k"), [a, p]);
    // Content with an unknown field 9 inside, from a joiner.
    let q = w.joiner("k", 3);
    let sq = w.sid(q);
    let frame = [0x12, 0x05, 0x48, 0x01, 0x22, 0x01, b'z']; // content {?9: 1, data "z"}
    assert_eq!(w.raw(q, &frame), [got(a, sq, 0, "z")]);
}

#[test]
fn last_oneof_field_on_the_wire_wins() {
    // §2: with several oneof fields in one Message, the last one is the message.
    let connect = [0x1a, 0x02, 0x08, 0x05]; // connect {id 5}
    let heartbeat_false = [0x08, 0x00];
    let content = [0x12, 0x02, 0x22, 0x00]; // content {data ""}
    let connected = [0x20, 0x01];
    let rows: &[(&str, Vec<u8>, bool)] = &[
        (
            "heartbeat then connect",
            [&heartbeat_false[..], &connect].concat(),
            true,
        ),
        (
            "content then connect",
            [&content[..], &connect].concat(),
            true,
        ),
        (
            "connect then heartbeat",
            [&connect[..], &heartbeat_false].concat(),
            false,
        ),
        (
            "connect then connected",
            [&connect[..], &connected].concat(),
            false,
        ),
        (
            "connect then content",
            [&connect[..], &content].concat(),
            false,
        ),
    ];
    for (what, frame, connects) in rows {
        let mut w = World::new();
        let p = w.open("k", false);
        assert_eq!(w.tick(p), [heartbeat(p)]);
        let outs = w.raw(p, frame);
        if *connects {
            assert_eq!(outs, [answer(p, true)], "{what}");
            assert_eq!(w.member_id(p), Some(5));
            // The heartbeat before the connect did not count.
            assert_eq!(w.peer(p).missed, 1, "{what}");
        } else {
            assert_eq!(outs, [], "{what}");
            assert_eq!(w.member_id(p), None, "{what}");
        }
    }
}

#[test]
fn members_packed_or_unpacked_both_work() {
    // §2: `members` decodes the same packed, unpacked, or in pieces of both.
    let rows: &[(&str, &[u8])] = &[
        ("packed", &[0x08, 0x03, 0x12, 0x02, 0x07, 0x02]),
        ("unpacked", &[0x08, 0x03, 0x10, 0x07, 0x10, 0x02]),
        ("mixed", &[0x08, 0x03, 0x12, 0x01, 0x07, 0x10, 0x02]),
        (
            "packed, big ids",
            &[0x08, 0x03, 0x12, 0x06, 0x80, 0x80, 0x80, 0x80, 0x08, 0x02],
        ),
    ];
    for &(what, group_data) in rows {
        let mut w = World::new();
        let [a, b] = w.group("k", [(1, false), (2, false)]);
        let p = w.open("k", false);
        let frame = [&[0x1a, group_data.len() as u8][..], group_data].concat();
        assert_eq!(w.raw(p, &frame), [answer(p, true)], "{what}");
        assert_eq!(w.members("k"), [a, b, p], "{what}");
        assert_eq!(w.member_id(p), Some(3));
    }
}

// ---------------------------------------------------------------------------------------------
// Identity: stale and unknown connections

#[test]
fn events_for_stale_or_unknown_conn_ids_do_nothing() {
    // ConnId: an old generation of a reused slot, or a slot never used, reaches no peer.
    let mut w = World::new();
    let old = conn(0, 0);
    assert_eq!(w.open_at(old, b"k", false), []);
    assert!(w.join(old, 1, &[]));
    assert_eq!(w.gone(old), []);
    let new = conn(0, 1);
    assert_eq!(w.open_at(new, b"k", false), []);
    let p = w.open("k", false);
    assert!(w.join(p, 2, &[]));
    assert!(!w.join(new, 3, &[])); // NEW is bound to P
    let snew = w.sid(new);
    for stale in [old, conn(0, 2), conn(7, 0), conn(u32::MAX, 0)] {
        assert_eq!(w.connect(stale, 9, &[]), [], "{stale:?}");
        assert_eq!(w.content(stale, snew, "x", false), []);
        assert_eq!(w.heartbeat(stale, true), []);
        assert_eq!(w.raw(stale, &[0xff]), []);
        assert_eq!(w.raw(stale, &[]), []);
        assert_eq!(w.tick(stale), []);
        assert_eq!(w.tick(stale), []);
        assert_eq!(w.tick(stale), []);
        assert_eq!(w.step(|hub, out| hub.on_close(stale, out)), []);
        // `close` always closes the connection it names, but touches no peer.
        assert_eq!(
            w.kick(stale, CloseReason::Shutdown),
            [closed(stale, CloseReason::Shutdown)]
        );
    }
    assert_eq!(w.peer(new).missed, 0);
    assert_eq!(w.bound_to(new), Some(p));
    assert_eq!(w.members("k"), [p]);
    assert_eq!(w.content(new, 0, "x", false), [got(p, snew, 0, "x")]);
}

#[test]
fn on_close_twice_is_harmless() {
    // §6 happens once: a second on_close (or one after the hub's own close) does nothing.
    let mut w = World::new();
    let [a] = w.group("k", [(1, false)]);
    let p = w.joiner("k", 2);
    let sp = w.sid(p);
    assert_eq!(w.gone(p), [got(a, sp, 0, "")]);
    assert_eq!(w.gone(p), []);
    assert_eq!(
        w.kick(a, CloseReason::Shutdown),
        [closed(a, CloseReason::Shutdown)]
    );
    assert_eq!(w.gone(a), []);
    assert_eq!(w.gone(a), []);
    assert_eq!(w.hub.peer_count(), 0);
    assert_eq!(w.hub.group_count(), 0);
}

#[test]
fn reopening_a_held_slot_forgets_the_old_peer() {
    // Defensive: on_open on a slot still held by an older generation runs §6 for the old peer.
    let mut w = World::new();
    let [a] = w.group("k", [(1, false)]);
    let old = w.joiner("k", 2);
    let s = w.sid(old);
    w.live.remove(&old); // the driver lost track of it
    let new = ConnId {
        generation: old.generation + 1,
        ..old
    };
    assert_eq!(w.open_at(new, b"k", false), [got(a, s, 0, "")]);
    assert!(w.hub.peer(old).is_none());
    assert!(w.peer(a).joiners.is_empty());
}

#[test]
fn reopening_a_held_slot_with_a_bad_key_still_forgets_the_old_peer() {
    // Found by fuzzing: a bad key on the new connection used to return before the stale peer
    // was forgotten, leaving it in its group with its bindings for ever.
    for key in [&b""[..], &[b'k'; MAX_KEY_LEN + 1]] {
        let mut w = World::new();
        let [a] = w.group("k", [(1, false)]);
        let old = w.joiner("k", 2);
        let s = w.sid(old);
        w.live.remove(&old);
        let new = ConnId {
            generation: old.generation + 1,
            ..old
        };
        let reason = if key.is_empty() {
            CloseReason::KeyEmpty
        } else {
            CloseReason::KeyTooLong
        };
        assert_eq!(
            w.open_at(new, key, false),
            [got(a, s, 0, ""), closed(new, reason)]
        );
        assert!(w.hub.peer(old).is_none());
        assert!(w.peer(a).joiners.is_empty());
        assert_eq!(w.hub.peer_count(), 1);
    }
}

#[test]
fn hundred_groups_stay_isolated() {
    // Groups are per key: ids, content and disconnects never cross from one key to another.
    let mut w = World::new();
    let n = 100u32;
    let mut pairs = Vec::new();
    for k in 0..n {
        let key = format!("group-{k}");
        let f = w.open(&key, false);
        assert!(w.join(f, k + 1, &[]), "group {k} is new");
        pairs.push((key, f));
    }
    let mut joiners = Vec::new();
    for (k, (key, f)) in pairs.iter().enumerate() {
        let j = w.open(key, false);
        // Listing another group's founder id does not help.
        let other = (k as u32 + 1) % n + 1;
        assert!(!w.join(j, 1000, &[other]), "group {k}");
        assert_eq!(w.bound_to(j), Some(*f));
        joiners.push(j);
    }
    assert_eq!(w.hub.group_count(), n as usize);
    for k in 0..n as usize {
        let ((_, f), j) = (&pairs[k], joiners[k]);
        let sj = w.sid(j);
        let data = format!("{k}");
        assert_eq!(w.content(j, 0, &data, false), [got(*f, sj, 0, &data)]);
        assert_eq!(w.content(*f, sj, &data, false), [got(j, 0, sj, &data)]);
        let next = joiners[(k + 1) % n as usize];
        let snext = w.sid(next);
        assert_eq!(w.content(*f, snext, "cross", false), []);
    }
    let (f0, j0) = (pairs[0].1, joiners[0]);
    let s0 = w.sid(j0);
    assert_eq!(w.gone(f0), [got(j0, 0, s0, "")]);
    assert_eq!(w.hub.group_count(), n as usize - 1);
    for (k, (key, f)) in pairs.iter().enumerate().skip(1) {
        assert_eq!(w.members(key), [*f], "group {k}");
    }
}

// ---------------------------------------------------------------------------------------------
// Randomized

/// xorshift64: enough randomness for a deterministic fuzz, no dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn one_in(&mut self, n: u64) -> bool {
        self.next().is_multiple_of(n)
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

/// What the random runs went through, to check that they reach the interesting cases.
#[derive(Debug, Default)]
struct Seen {
    connected: usize,
    bound: usize,
    blocking: usize,
    relayed: usize,
    notes: usize,
    heartbeat_closes: usize,
    bad_closes: usize,
}

#[test]
fn random_sequences_keep_the_invariants() {
    // Thousands of random events on few keys and slots keep every invariant, never send to a
    // closed peer, and answer every connect first and consistently.
    let mut seen = Seen::default();
    for seed in 1..=8 {
        random_run(seed, 4000, &mut seen);
    }
    println!("{seen:?}");
    let Seen {
        connected,
        bound,
        blocking,
        relayed,
        notes,
        heartbeat_closes,
        bad_closes,
    } = seen;
    for (what, n) in [
        ("connected", connected),
        ("bound", bound),
        ("blocking", blocking),
        ("relayed", relayed),
        ("notes", notes),
        ("heartbeat closes", heartbeat_closes),
        ("bad closes", bad_closes),
    ] {
        assert!(n > 0, "the random runs never reached {what}");
    }
}

fn random_run(seed: u64, steps: usize, seen: &mut Seen) {
    const SLOTS: u32 = 14;
    const KEYS: [&[u8]; 3] = [b"x", b"y", b"z"];
    let mut rng = XorShift(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut w = World::with_seed(seed);
    let mut generation = [0u32; SLOTS as usize];
    let mut retired: Vec<ConnId> = Vec::new();
    for step in 0..steps {
        let mut live: Vec<ConnId> = w.live.iter().copied().collect();
        live.sort_unstable();
        let free: Vec<u32> = (0..SLOTS)
            .filter(|&s| !live.iter().any(|c| c.slot == s))
            .collect();
        let roll = rng.below(100);
        if live.is_empty() || (roll < 12 && !free.is_empty()) {
            // Open, on a free slot with a new generation; now and then a bad key.
            let slot = rng.pick(&free);
            generation[slot as usize] += 1;
            let id = conn(slot, generation[slot as usize]);
            let key: Vec<u8> = if rng.one_in(40) {
                Vec::new()
            } else {
                rng.pick(&KEYS).to_vec()
            };
            let outs = w.open_at(id, &key, rng.one_in(4));
            if key.is_empty() {
                assert_eq!(outs, [closed(id, CloseReason::KeyEmpty)]);
                retired.push(id);
            } else {
                assert_eq!(outs, []);
            }
            continue;
        }
        let p = rng.pick(&live);
        let outs = match roll {
            12..=36 => {
                let id = 1 + rng.below(5) as u32;
                let members: Vec<u32> = if rng.one_in(3) {
                    Vec::new()
                } else {
                    (0..1 + rng.below(2))
                        .map(|_| 1 + rng.below(5) as u32)
                        .collect()
                };
                let expected = connect_oracle(&w, p, &members);
                let outs = w.connect(p, id, &members);
                let Some(Out::Send(to, Type::Connected(ok))) = outs.first() else {
                    panic!("step {step}: connect answered {outs:?}");
                };
                assert_eq!((*to, *ok), (p, expected), "step {step}: {members:?}");
                if *ok {
                    seen.connected += 1;
                    assert_eq!(w.member_id(p), Some(id), "step {step}");
                } else {
                    seen.bound += 1;
                    assert_eq!(w.member_id(p), None, "step {step}");
                    let m = w.bound_to(p).expect("false but unbound");
                    assert!(w.members(&key_of(&w, p)).contains(&m), "step {step}");
                    assert_eq!(outs.len(), 1, "step {step}");
                }
                if let Some(Out::Close(_, reason)) = outs.get(1) {
                    assert_eq!(*reason, CloseReason::BlockingMember);
                    seen.blocking += 1;
                }
                outs
            }
            37..=61 => {
                // Often to one of P's own joiners, so that member -> joiner routes are used.
                let joiners = w.peer(p).joiners.clone();
                let rid = match rng.below(10) {
                    0 | 1 => 0,
                    2 => rng.next() as u32,
                    3..=5 if !joiners.is_empty() => w.sid(rng.pick(&joiners)),
                    _ => w.sid(rng.pick(&live)),
                };
                let data = format!("{step}");
                let outs = w.content(p, rid, &data, rng.one_in(4));
                assert!(outs.len() <= 2, "step {step}: {outs:?}");
                for out in &outs {
                    let Out::Send(_, Type::Content(c)) = out else {
                        panic!("step {step}: content gave {out:?}");
                    };
                    assert_eq!(c.data, data.as_bytes());
                    seen.relayed += 1;
                }
                outs
            }
            62..=71 => w.heartbeat(p, rng.one_in(2)),
            72..=81 => {
                let outs = w.tick(p);
                if let Some(Out::Close(to, reason)) = outs.first() {
                    assert_eq!((*to, *reason), (p, CloseReason::Heartbeat));
                    seen.heartbeat_closes += 1;
                } else {
                    assert_eq!(outs, [heartbeat(p)]);
                }
                outs
            }
            82..=87 => w.gone(p),
            88..=90 => w.kick(p, CloseReason::SendQueueFull),
            91..=93 => {
                let frames: [&[u8]; 4] = [&[0xff], &[], &[0x28, 0x01], &[0x12, 0x09]];
                let frame = rng.pick(&frames);
                let outs = w.raw(p, frame);
                assert!(matches!(outs.first(), Some(Out::Close(to, _)) if *to == p));
                seen.bad_closes += 1;
                outs
            }
            _ => {
                // Any event for a retired connection does nothing.
                let Some(&stale) = retired.get(rng.below(retired.len().max(1))) else {
                    continue;
                };
                let outs = match rng.below(4) {
                    0 => w.connect(stale, 1, &[1]),
                    1 => {
                        let sp = w.sid(p);
                        w.content(stale, sp, "stale", false)
                    }
                    2 => w.tick(stale),
                    _ => w.step(|hub, out| hub.on_close(stale, out)),
                };
                assert_eq!(outs, [], "step {step}: stale {stale:?}");
                outs
            }
        };
        for out in &outs {
            if let Out::Send(_, Type::Content(c)) = out {
                if c.data.is_empty() {
                    seen.notes += 1;
                }
            }
        }
        for id in &live {
            if !w.live.contains(id) {
                retired.push(*id);
            }
        }
    }
}

/// The answer §5 gives to `connect {members}` from `p`, from the state before it: true for
/// rules 1, 2a, 2b, 2c and 3, false for rule 4.
fn connect_oracle(w: &World, p: ConnId, members: &[u32]) -> bool {
    let group = w.members(&key_of(w, p));
    let ids: Vec<u32> = group.iter().filter_map(|&m| w.member_id(m)).collect();
    match group[..] {
        [] => true,
        [lone] if lone == p || w.peer(p).tried.contains(&lone) => true,
        _ => ids.iter().any(|id| members.contains(id)),
    }
}

fn key_of(w: &World, p: ConnId) -> String {
    String::from_utf8(w.peer(p).key.to_vec()).unwrap()
}

#[test]
fn connect_lists_are_capped_by_count_and_by_size() {
    // Proves docs/PROTOCOL.md §7 (ours): up to MAX_CONNECT_MEMBERS ids are answered; more, or
    // a connect too long to hold at most that many, closes 4743 before its ids are decoded.
    let at_cap: Vec<u32> = (1..=MAX_CONNECT_MEMBERS as u32).map(|i| i << 20).collect();
    let mut w = World::new();
    let a = w.open("k", false);
    assert_eq!(w.connect(a, 1, &at_cap), [answer(a, true)]);

    let over: Vec<u32> = (1..=MAX_CONNECT_MEMBERS as u32 + 1).collect();
    let b = w.open("k", false);
    assert_eq!(
        w.connect(b, 2, &over),
        [closed(b, CloseReason::TooManyMembers)]
    );
    assert!(w.hub.peer(b).is_none());

    // Unpacked and padded with unknown fields: longer than any list at the cap can be.
    let mut huge = vec![0x1a];
    let mut body = Vec::new();
    for _ in 0..MAX_CONNECT_MEMBERS * 2 {
        body.extend_from_slice(&[0x10, 0xff, 0xff, 0xff, 0xff, 0x0f]);
    }
    prost::encoding::encode_varint(body.len() as u64, &mut huge);
    huge.extend_from_slice(&body);
    let c = w.open("k", false);
    assert_eq!(w.raw(c, &huge), [closed(c, CloseReason::TooManyMembers)]);

    // Split over several connect fields, each short enough alone: a decoder merges them.
    let half: Vec<u32> = (1..=MAX_CONNECT_MEMBERS as u32 / 2 + 1)
        .map(|i| i << 20)
        .collect();
    let one = encode(Type::Connect(GroupData {
        id: 4,
        members: half,
    }));
    let d = w.open("k", false);
    assert_eq!(
        w.raw(d, &one.repeat(3)),
        [closed(d, CloseReason::TooManyMembers)]
    );
    assert_eq!(w.members("k"), [a]);
}

#[test]
fn long_messages_with_too_many_fields_are_refused_before_decoding() {
    // Proves docs/PROTOCOL.md §7 (ours): a long message of many tiny fields closes 4743; a long
    // content with one big data field is relayed.
    let mut w = World::new();
    let (m, j) = (w.open("k", false), w.open("k", false));
    assert!(w.join(m, 1, &[]));
    assert!(!w.join(j, 2, &[]));
    let s = w.sid(j);
    let big = "x".repeat(1 << 20);
    assert_eq!(w.content(j, 0, &big, false), [got(m, s, 0, &big)]);
    let mut many = [0x28u8, 0x00].repeat(MAX_FIELDS * 40);
    many.extend_from_slice(&[0x08, 0x01]);
    assert_eq!(
        w.raw(j, &many),
        [closed(j, CloseReason::TooManyFields), got(m, s, 0, "")]
    );
}

#[test]
fn a_full_group_refuses_newcomers_but_not_members_of_its_mesh() {
    // Proves --max-group-size (docs/PROTOCOL.md §7, ours): a newcomer that would be bound to
    // join a group of n members is closed with 4746; a peer sharing a member joins anyway.
    let mut w = World::new();
    w.hub = Hub::new(7).with_max_group_size(2);
    let a = w.open("k", false);
    assert!(w.join(a, 1, &[]));
    let b = w.open("k", false);
    assert!(!w.join(b, 2, &[]), "bound: the group has one member");
    assert!(w.join(b, 2, &[1]), "through its member, it joins the mesh");
    assert_eq!(w.members("k"), [a, b]);
    let c = w.open("k", false);
    assert_eq!(w.connect(c, 3, &[]), [closed(c, CloseReason::GroupFull)]);
    assert!(w.hub.peer(c).is_none());
    let d = w.open("k", false);
    assert!(
        w.join(d, 4, &[2]),
        "a member of the mesh reconnecting is never refused"
    );
    assert_eq!(w.members("k").len(), 3);
    // Another key is another group.
    let e = w.open("other", false);
    assert!(w.join(e, 1, &[]));
}
