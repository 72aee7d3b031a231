//! Transcript tests of the room engine: one stanza in, the actions out, checked against the
//! XEP-0045 use cases (join order and status codes, refusals, kick and ban, history,
//! configuration, invitations, voice requests, self-ping, ghosts, persistence).

use super::*;

const ROOM: &str = "room@conference.example.org";

fn ctx() -> Ctx<'static> {
    Ctx {
        now: 1_000_000,
        admins: &[],
        max_history: 50,
    }
}

fn jid(s: &str) -> Jid {
    Jid::parse(s).unwrap()
}

fn el(s: &str) -> Element {
    Element::parse(s).unwrap()
}

fn new_room() -> Room {
    let mut r = Room::create(
        BareJid::parse(ROOM).unwrap(),
        RoomConfig::new(20),
        BareJid::parse("alice@example.org").unwrap(),
        false,
        [7; 32],
    );
    join(&mut r, "alice@example.org/phone", "Alice");
    r
}

fn sent(actions: &[Action]) -> Vec<&Element> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(e) => Some(e),
            _ => None,
        })
        .collect()
}

fn codes(p: &Element) -> Vec<String> {
    p.get_child("x", NS_USER)
        .map(|x| {
            x.children()
                .filter(|c| c.name() == "status")
                .filter_map(|c| c.attr("code").map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn join(r: &mut Room, who: &str, nick: &str) -> Vec<Action> {
    let p = el(&format!(
        "<presence xmlns='jabber:client' from='{who}' to='{ROOM}/{nick}'><x xmlns='{NS_MUC}'/></presence>"
    ));
    r.presence(&ctx(), &jid(who), nick, p)
}

fn error_condition(e: &Element) -> Option<String> {
    e.get_child("error", ns::CLIENT)
        .and_then(|e| e.first_child())
        .map(|c| c.name().to_string())
}

#[test]
fn join_sends_others_then_self_last_with_110_history_and_subject() {
    let mut r = new_room();
    let a = join(&mut r, "bob@example.org/pc", "Bob");
    let s = sent(&a);
    // Alice to Bob, Bob to Alice, Bob's own, then the (empty) subject.
    assert_eq!(s[0].attr("from"), Some("room@conference.example.org/Alice"));
    assert_eq!(s[0].attr("to"), Some("bob@example.org/pc"));
    assert_eq!(s[1].attr("to"), Some("alice@example.org/phone"));
    assert!(codes(s[1]).is_empty());
    assert_eq!(s[2].attr("to"), Some("bob@example.org/pc"));
    assert!(codes(s[2]).contains(&"110".to_string()));
    assert!(s[2].has_child("occupant-id", NS_OCCUPANT_ID));
    assert!(s[3].has_child("subject", ns::CLIENT));
    // Semi-anonymous: Bob doesn't see Alice's JID, moderator Alice sees Bob's.
    let item = |p: &Element| {
        p.get_child("x", NS_USER)
            .unwrap()
            .get_child("item", NS_USER)
            .unwrap()
            .clone()
    };
    assert_eq!(item(s[0]).attr("jid"), None);
    assert_eq!(item(s[1]).attr("jid"), Some("bob@example.org/pc"));
    assert_eq!(item(s[0]).attr("role"), Some("moderator"));
    assert_eq!(item(s[2]).attr("affiliation"), Some("none"));
}

#[test]
fn creation_gets_201_and_a_locked_room_refuses_others() {
    let mut r = Room::create(
        BareJid::parse(ROOM).unwrap(),
        RoomConfig::new(20),
        BareJid::parse("alice@example.org").unwrap(),
        true,
        [7; 32],
    );
    let a = join(&mut r, "alice@example.org/phone", "Alice");
    let own = sent(&a)[0];
    assert_eq!(codes(own), ["110", "170", "201"]);
    let a = join(&mut r, "bob@example.org/pc", "Bob");
    assert_eq!(
        error_condition(sent(&a)[0]).as_deref(),
        Some("item-not-found")
    );
    // The instant room: an empty submitted form unlocks it.
    let iq = el(&format!(
        "<iq xmlns='jabber:client' type='set' id='c' from='alice@example.org/phone' to='{ROOM}'><query xmlns='{NS_OWNER}'><x xmlns='jabber:x:data' type='submit'/></query></iq>"
    ));
    let a = r.iq(&ctx(), &jid("alice@example.org/phone"), None, iq);
    assert!(sent(&a).iter().any(|e| e.attr("type") == Some("result")));
    assert!(!r.locked);
    let a = join(&mut r, "bob@example.org/pc", "Bob");
    assert!(sent(&a).iter().all(|e| e.attr("type") != Some("error")));
}

#[test]
fn refusals_carry_the_xep_0045_conditions() {
    let mut r = new_room();
    let a = join(&mut r, "bob@example.org/pc", "Alice");
    assert_eq!(error_condition(sent(&a)[0]).as_deref(), Some("conflict"));
    r.config.members_only = true;
    let a = join(&mut r, "bob@example.org/pc", "Bob");
    assert_eq!(
        error_condition(sent(&a)[0]).as_deref(),
        Some("registration-required")
    );
    r.config.members_only = false;
    r.config.password = Some("pw".into());
    let a = join(&mut r, "bob@example.org/pc", "Bob");
    assert_eq!(
        error_condition(sent(&a)[0]).as_deref(),
        Some("not-authorized")
    );
    let p = el(&format!(
        "<presence xmlns='jabber:client' to='{ROOM}/Bob'><x xmlns='{NS_MUC}'><password>pw</password></x></presence>"
    ));
    let a = r.presence(&ctx(), &jid("bob@example.org/pc"), "Bob", p);
    assert!(sent(&a).iter().all(|e| e.attr("type") != Some("error")));
}

#[test]
fn groupchat_goes_through_the_archive_step_and_then_to_everyone() {
    let mut r = new_room();
    join(&mut r, "bob@example.org/pc", "Bob");
    let m = el(&format!(
        "<message xmlns='jabber:client' type='groupchat' id='m1' to='{ROOM}'><body>hi</body><occupant-id xmlns='{NS_OCCUPANT_ID}' id='forged'/></message>"
    ));
    let a = r.message(&ctx(), &jid("bob@example.org/pc"), None, m);
    let Some(Action::Groupchat(msg)) = a.into_iter().next() else {
        panic!("no groupchat action");
    };
    assert_eq!(msg.attr("from"), Some("room@conference.example.org/Bob"));
    assert_ne!(
        msg.get_child("occupant-id", NS_OCCUPANT_ID)
            .unwrap()
            .attr("id"),
        Some("forged")
    );
    let a = r.broadcast(&ctx(), msg, Some(42));
    let s = sent(&a);
    assert_eq!(s.len(), 2);
    assert!(s.iter().all(|m| m.attr("id") == Some("m1")));
    assert!(s
        .iter()
        .all(|m| m.get_child("stanza-id", NS_SID).unwrap().attr("by") == Some(ROOM)));
    // A newcomer gets it as delayed history.
    let a = join(&mut r, "carol@example.org/x", "Carol");
    let hist: Vec<_> = sent(&a)
        .into_iter()
        .filter(|m| m.has_child("body", ns::CLIENT))
        .collect();
    assert_eq!(hist.len(), 1);
    assert!(hist[0].has_child("delay", ns::DELAY));
    // Not an occupant: refused.
    let m = el("<message xmlns='jabber:client' type='groupchat'><body>x</body></message>");
    let a = r.message(&ctx(), &jid("eve@example.org/x"), None, m);
    assert_eq!(
        error_condition(sent(&a)[0]).as_deref(),
        Some("not-acceptable")
    );
}

#[test]
fn kick_ban_and_their_status_codes() {
    let mut r = new_room();
    join(&mut r, "bob@example.org/pc", "Bob");
    join(&mut r, "carol@example.org/x", "Carol");
    let kick = el(&format!(
        "<iq xmlns='jabber:client' type='set' id='k' to='{ROOM}'><query xmlns='{NS_ADMIN}'><item nick='Bob' role='none'><reason>spam</reason></item></query></iq>"
    ));
    // A participant may not kick.
    let a = r.iq(&ctx(), &jid("carol@example.org/x"), None, kick.clone());
    assert_eq!(error_condition(sent(&a)[0]).as_deref(), Some("forbidden"));
    let a = r.iq(&ctx(), &jid("alice@example.org/phone"), None, kick);
    let s = sent(&a);
    let to_bob = s
        .iter()
        .find(|p| p.attr("to") == Some("bob@example.org/pc"))
        .unwrap();
    assert_eq!(to_bob.attr("type"), Some("unavailable"));
    assert_eq!(codes(to_bob), ["110", "307"]);
    assert!(s
        .iter()
        .any(|p| p.attr("to") == Some("carol@example.org/x") && codes(p) == ["307"]));
    assert!(s.iter().any(|p| p.attr("type") == Some("result")));
    assert!(!r.has_session(&jid("bob@example.org/pc")));
    // Ban by JID: Carol leaves with 301 and cannot come back.
    let ban = el(&format!(
        "<iq xmlns='jabber:client' type='set' id='b' to='{ROOM}'><query xmlns='{NS_ADMIN}'><item jid='carol@example.org' affiliation='outcast'/></query></iq>"
    ));
    let a = r.iq(&ctx(), &jid("alice@example.org/phone"), None, ban);
    assert!(a.iter().any(|a| matches!(a, Action::Save)));
    assert!(sent(&a).iter().any(|p| codes(p) == ["110", "301"]));
    let a = join(&mut r, "carol@example.org/y", "Carol");
    assert_eq!(error_condition(sent(&a)[0]).as_deref(), Some("forbidden"));
    // The last owner stays.
    let demote = el(&format!(
        "<iq xmlns='jabber:client' type='set' id='d' to='{ROOM}'><query xmlns='{NS_ADMIN}'><item jid='alice@example.org' affiliation='member'/></query></iq>"
    ));
    let a = r.iq(&ctx(), &jid("alice@example.org/phone"), None, demote);
    assert_eq!(error_condition(sent(&a)[0]).as_deref(), Some("conflict"));
}

#[test]
fn members_only_switch_removes_non_members_with_322() {
    let mut r = new_room();
    join(&mut r, "bob@example.org/pc", "Bob");
    let iq = el(&format!(
        "<iq xmlns='jabber:client' type='set' id='c' to='{ROOM}'><query xmlns='{NS_OWNER}'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>{}</value></field><field var='muc#roomconfig_membersonly'><value>1</value></field></x></query></iq>",
        super::super::NS_ROOMCONFIG
    ));
    let a = r.iq(&ctx(), &jid("alice@example.org/phone"), None, iq);
    assert!(sent(&a)
        .iter()
        .any(|p| p.attr("to") == Some("bob@example.org/pc") && codes(p) == ["110", "322"]));
    assert!(sent(&a)
        .iter()
        .any(|m| m.name() == "message" && codes(m) == ["104"]));
    assert!(!r.has_session(&jid("bob@example.org/pc")));
}

#[test]
fn self_ping_answered_by_the_room() {
    let mut r = new_room();
    let ping = |from: &str| {
        el(&format!(
            "<iq xmlns='jabber:client' type='get' id='p' from='{from}' to='{ROOM}/Alice'><ping xmlns='urn:xmpp:ping'/></iq>"
        ))
    };
    let a = r.iq(
        &ctx(),
        &jid("alice@example.org/phone"),
        Some("Alice"),
        ping("alice@example.org/phone"),
    );
    assert_eq!(sent(&a)[0].attr("type"), Some("result"));
    let a = r.iq(
        &ctx(),
        &jid("alice@example.org/laptop"),
        Some("Alice"),
        ping("alice@example.org/laptop"),
    );
    assert_eq!(
        error_condition(sent(&a)[0]).as_deref(),
        Some("not-acceptable")
    );
}

#[test]
fn temporary_room_goes_when_empty_and_persistent_room_stays() {
    let mut r = new_room();
    let leave = el(&format!(
        "<presence xmlns='jabber:client' type='unavailable' to='{ROOM}/Alice'/>"
    ));
    let a = r.presence(
        &ctx(),
        &jid("alice@example.org/phone"),
        "Alice",
        leave.clone(),
    );
    assert_eq!(codes(sent(&a)[0]), ["110"]);
    assert!(a.iter().any(|a| matches!(a, Action::Destroyed)));
    let mut r = new_room();
    r.config.persistent = true;
    let a = r.presence(&ctx(), &jid("alice@example.org/phone"), "Alice", leave);
    assert!(!a.iter().any(|a| matches!(a, Action::Destroyed)));
}

#[test]
fn a_bounce_from_an_occupant_removes_that_ghost() {
    let mut r = new_room();
    join(&mut r, "bob@remote.example/pc", "Bob");
    let err = el("<message xmlns='jabber:client' type='error'><error type='cancel'><remote-server-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>");
    let a = r.message(&ctx(), &jid("bob@remote.example/pc"), Some("Alice"), err);
    assert!(!r.has_session(&jid("bob@remote.example/pc")));
    assert!(sent(&a)
        .iter()
        .any(|p| p.attr("to") == Some("alice@example.org/phone") && codes(p) == ["333"]));
}

#[test]
fn occupant_ids_are_stable_per_person_and_room() {
    let r = new_room();
    let a = BareJid::parse("a@x").unwrap();
    let b = BareJid::parse("b@x").unwrap();
    assert_eq!(r.occupant_id(&a), r.occupant_id(&a));
    assert_ne!(r.occupant_id(&a), r.occupant_id(&b));
    let other = Room::create(
        BareJid::parse("other@conference.example.org").unwrap(),
        RoomConfig::new(1),
        a.clone(),
        false,
        [7; 32],
    );
    assert_ne!(r.occupant_id(&a), other.occupant_id(&a));
}

#[test]
fn history_selection_applies_every_limit() {
    // (time, chars), oldest first.
    let e = [(100, 10), (200, 10), (300, 10), (400, 10)];
    let req = |s: Option<usize>, c: Option<usize>, secs: Option<u64>, since: Option<u64>| {
        HistoryRequest {
            max_stanzas: s,
            max_chars: c,
            seconds: secs,
            since,
        }
    };
    assert_eq!(select_history(&e, &req(None, None, None, None), 20, 500), 0);
    assert_eq!(select_history(&e, &req(None, None, None, None), 2, 500), 2);
    assert_eq!(
        select_history(&e, &req(Some(0), None, None, None), 20, 500),
        4
    );
    assert_eq!(
        select_history(&e, &req(Some(3), Some(15), None, None), 20, 500),
        3
    );
    assert_eq!(
        select_history(&e, &req(None, None, Some(150), None), 20, 500),
        3
    );
    assert_eq!(
        select_history(&e, &req(None, None, None, Some(300)), 20, 500),
        2
    );
    assert_eq!(
        select_history(&[], &req(None, None, None, None), 20, 500),
        0
    );
}

#[test]
fn stored_room_round_trips() {
    let mut r = new_room();
    r.config.persistent = true;
    r.subject = Some(("Plans".into(), "Alice".into()));
    r.affiliations.insert(
        BareJid::parse("bob@example.org").unwrap(),
        Affiliation::Member,
    );
    let back = Room::from_element(r.jid.clone(), &r.to_element(), RoomConfig::new(1), [7; 32]);
    assert_eq!(back.config, r.config);
    assert_eq!(back.affiliations, r.affiliations);
    assert_eq!(back.subject, r.subject);
}

#[test]
fn private_messages_follow_allowpm() {
    let mut r = new_room();
    join(&mut r, "bob@example.org/pc", "Bob");
    let pm =
        || el("<message xmlns='jabber:client' type='chat' id='pm1'><body>psst</body></message>");
    let a = r.message(&ctx(), &jid("bob@example.org/pc"), Some("Alice"), pm());
    let s = sent(&a);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].attr("from"), Some("room@conference.example.org/Bob"));
    assert_eq!(s[0].attr("to"), Some("alice@example.org/phone"));
    assert!(s[0].has_child("x", NS_USER));
    r.config.allow_pm = AllowPm::Nobody;
    let a = r.message(&ctx(), &jid("bob@example.org/pc"), Some("Alice"), pm());
    assert_eq!(error_condition(sent(&a)[0]).as_deref(), Some("forbidden"));
    r.config.allow_pm = AllowPm::Anyone;
    let a = r.message(&ctx(), &jid("bob@example.org/pc"), Some("Nobody"), pm());
    assert_eq!(
        error_condition(sent(&a)[0]).as_deref(),
        Some("item-not-found")
    );
}

#[test]
fn mediated_invitation_to_a_members_only_room_makes_a_member() {
    let mut r = new_room();
    r.config.members_only = true;
    let inv = el(&format!(
        "<message xmlns='jabber:client' to='{ROOM}'><x xmlns='{NS_USER}'><invite to='carol@example.org'><reason>join us</reason></invite></x></message>"
    ));
    let a = r.message(&ctx(), &jid("alice@example.org/phone"), None, inv);
    assert!(a.iter().any(|a| matches!(a, Action::Save)));
    let m = sent(&a)[0];
    assert_eq!(m.attr("from"), Some(ROOM));
    assert_eq!(m.attr("to"), Some("carol@example.org"));
    let invite = m
        .get_child("x", NS_USER)
        .unwrap()
        .get_child("invite", NS_USER)
        .unwrap();
    assert_eq!(invite.attr("from"), Some("alice@example.org/phone"));
    let a = join(&mut r, "carol@example.org/x", "Carol");
    assert!(sent(&a).iter().all(|e| e.attr("type") != Some("error")));
}

#[test]
fn destroy_tells_everyone_the_alternate_venue() {
    let mut r = new_room();
    join(&mut r, "bob@example.org/pc", "Bob");
    let iq = el(&format!(
        "<iq xmlns='jabber:client' type='set' id='x' to='{ROOM}'><query xmlns='{NS_OWNER}'><destroy jid='new@conference.example.org'><reason>moved</reason></destroy></query></iq>"
    ));
    // Not an owner: refused.
    let a = r.iq(&ctx(), &jid("bob@example.org/pc"), None, iq.clone());
    assert_eq!(error_condition(sent(&a)[0]).as_deref(), Some("forbidden"));
    let a = r.iq(&ctx(), &jid("alice@example.org/phone"), None, iq);
    assert!(a.iter().any(|a| matches!(a, Action::Destroyed)));
    let to_bob = sent(&a)
        .into_iter()
        .find(|p| p.attr("to") == Some("bob@example.org/pc"))
        .unwrap();
    let d = to_bob
        .get_child("x", NS_USER)
        .unwrap()
        .get_child("destroy", NS_USER)
        .unwrap();
    assert_eq!(d.attr("jid"), Some("new@conference.example.org"));
    assert!(r.is_empty());
}

#[test]
fn voice_request_reaches_moderators_and_approval_gives_voice() {
    let mut r = new_room();
    r.config.moderated = true;
    join(&mut r, "bob@example.org/pc", "Bob");
    let m = el("<message xmlns='jabber:client' type='groupchat'><body>hi</body></message>");
    let a = r.message(&ctx(), &jid("bob@example.org/pc"), None, m.clone());
    assert_eq!(
        error_condition(sent(&a)[0]).as_deref(),
        Some("forbidden"),
        "visitors are silent"
    );
    let req = el(&format!(
        "<message xmlns='jabber:client' to='{ROOM}'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>{NS_REQUEST}</value></field><field var='muc#role'><value>participant</value></field></x></message>"
    ));
    let a = r.message(&ctx(), &jid("bob@example.org/pc"), None, req);
    let to_alice = sent(&a)[0].clone();
    assert_eq!(to_alice.attr("to"), Some("alice@example.org/phone"));
    let mut form = to_alice.get_child("x", ns::DATA_FORM).unwrap().clone();
    assert_eq!(form_value(&form, "muc#roomnick").as_deref(), Some("Bob"));
    form.set_attr("type", "submit");
    for f in form.children_mut() {
        if f.attr("var") == Some("muc#request_allow") {
            *f = result_field("muc#request_allow", &["true"]);
        }
    }
    let approve = Element::new("message", ns::CLIENT).with_child(form);
    r.message(&ctx(), &jid("alice@example.org/phone"), None, approve);
    let a = r.message(&ctx(), &jid("bob@example.org/pc"), None, m);
    assert!(matches!(a.first(), Some(Action::Groupchat(_))));
}

#[test]
fn nick_change_is_303_then_the_new_nick() {
    let mut r = new_room();
    join(&mut r, "bob@example.org/pc", "Bob");
    let p = el(&format!(
        "<presence xmlns='jabber:client' to='{ROOM}/Robert'/>"
    ));
    let a = r.presence(&ctx(), &jid("bob@example.org/pc"), "Robert", p);
    let s = sent(&a);
    let gone = s
        .iter()
        .find(|p| p.attr("to") == Some("alice@example.org/phone"))
        .unwrap();
    assert_eq!(gone.attr("type"), Some("unavailable"));
    assert_eq!(codes(gone), ["303"]);
    let item = gone
        .get_child("x", NS_USER)
        .unwrap()
        .get_child("item", NS_USER)
        .unwrap();
    assert_eq!(item.attr("nick"), Some("Robert"));
    assert!(s.iter().any(
        |p| p.attr("from") == Some("room@conference.example.org/Robert")
            && p.attr("type").is_none()
    ));
    // Taken nicks stay taken.
    let p = el(&format!(
        "<presence xmlns='jabber:client' to='{ROOM}/Alice'/>"
    ));
    let a = r.presence(&ctx(), &jid("bob@example.org/pc"), "Alice", p);
    assert_eq!(error_condition(sent(&a)[0]).as_deref(), Some("conflict"));
}

#[test]
fn server_admins_own_every_room() {
    let admins = [BareJid::parse("root@example.org").unwrap()];
    let ctx = Ctx {
        now: 1,
        admins: &admins,
        max_history: 50,
    };
    let r = new_room();
    assert_eq!(r.affiliation(&ctx, &admins[0]), Affiliation::Owner);
    let get = el(&format!(
        "<iq xmlns='jabber:client' type='get' id='g' to='{ROOM}'><query xmlns='{NS_OWNER}'/></iq>"
    ));
    let mut r = r;
    let a = r.iq(&ctx, &jid("root@example.org/x"), None, get);
    assert_eq!(sent(&a)[0].attr("type"), Some("result"));
}
