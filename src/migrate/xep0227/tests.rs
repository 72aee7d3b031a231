//! Tests of the XEP-0227 conversion: Prosody's real output, round trips of everything kith
//! writes, errors that name the user and element, and garbage that must not panic.

use super::*;
use crate::sasl::{derive_all, verify_password};

/// What Debian's Prosody 0.12 `prosody-migrator` (internal → xep0227) wrote for a user
/// registered with `prosodyctl register alice example.test 'alice pw'`, a roster, a pending
/// subscription, a vCard and private XML.
const PROSODY_ALICE: &str = include_str!("prosody-0.12-alice.xml");

#[test]
fn reads_prosody_output() {
    let hosts = parse(PROSODY_ALICE).unwrap();
    assert_eq!(hosts.len(), 1);
    assert_eq!(hosts[0].jid, "example.test");
    let alice = &hosts[0].users[0];
    assert_eq!(alice.name, "alice");
    assert_eq!(alice.password, None);
    assert_eq!(alice.scram.len(), 1);
    let c = &alice.scram[0];
    assert_eq!((c.hash, c.iterations), (Hash::Sha1, 10_000));
    assert!(
        verify_password("alice pw", c),
        "Prosody's SHA-1 keys verify the password"
    );
    assert!(!verify_password("alice pw ", c));

    let bob = &alice.roster[0];
    assert_eq!(bob.0, "bob@example.test");
    assert_eq!(bob.1.name.as_deref(), Some("Bob"));
    assert_eq!(bob.1.subscription, Subscription::Both);
    assert_eq!(bob.1.groups, ["Family"]);
    let dave = &alice.roster[1];
    assert_eq!(dave.0, "dave@elsewhere.test");
    assert!(dave.1.ask);
    assert_eq!(dave.1.subscription, Subscription::None);

    assert_eq!(alice.pending_in.len(), 1);
    assert!(alice.pending_in[0].is("presence", NS_CLIENT));
    assert_eq!(alice.pending_in[0].attr("from"), Some("carol@example.test"));

    let vcard = alice.vcard.as_ref().unwrap();
    assert_eq!(
        vcard.get_child("FN", NS_VCARD).unwrap().text(),
        "Alice Liddell"
    );
    assert_eq!(alice.private.len(), 1);
    assert!(alice.private[0].is("storage", "storage:rosternotes"));
}

#[test]
fn round_trips_everything_kith_writes() {
    let msg = Element::parse(
        "<message xmlns='jabber:client' from='bob@example.test/x' to='alice@example.test' \
         type='chat' id='m1'><body>hi &amp; bye</body></message>",
    )
    .unwrap();
    let user = User {
        name: "alice".into(),
        password: None,
        scram: derive_all("pw").unwrap().to_vec(),
        roster: vec![(
            "bob@example.test".into(),
            RosterItem {
                name: Some("Bob <B>".into()),
                subscription: Subscription::To,
                ask: true,
                approved: true,
                groups: vec!["A".into(), "B".into()],
            },
        )],
        pending_in: vec![Element::new("presence", NS_CLIENT)
            .with_attr("from", "carol@example.test")
            .with_attr("type", "subscribe")],
        vcard: Some(
            Element::new("vCard", NS_VCARD).with_child(Element::new("FN", NS_VCARD).with_text("A")),
        ),
        private: vec![Element::new("storage", "storage:rosternotes")],
        offline: vec![msg.clone()],
        pep: vec![PepNode {
            node: "urn:xmpp:avatar:metadata".into(),
            config: vec![("pubsub#access_model".into(), "open".into())],
            items: vec![(
                "abc".into(),
                Element::new("metadata", "urn:xmpp:avatar:metadata"),
            )],
        }],
        archive: vec![Archived {
            id: "1".into(),
            micros: 1_700_000_000_123_000,
            message: msg,
        }],
    };
    let hosts = vec![Host {
        jid: "example.test".into(),
        users: vec![
            user,
            User {
                name: "bob".into(),
                password: Some("x y".into()),
                ..User::default()
            },
        ],
    }];
    let doc = write(&hosts);
    assert!(doc.starts_with("<?xml"), "{doc}");
    assert_eq!(parse(&doc).unwrap(), hosts);
}

#[test]
fn errors_name_the_user_and_element() {
    let doc = |user: &str| {
        format!("<server-data xmlns='urn:xmpp:pie:0'><host jid='h'>{user}</host></server-data>")
    };
    let e = parse(&doc(
        "<user name='al'><scram-credentials xmlns='urn:xmpp:pie:0#scram' mechanism='SCRAM-SHA-1'>\
         <iter-count>x</iter-count></scram-credentials></user>",
    ))
    .unwrap_err();
    assert!(e.0.starts_with("user al@h: "), "{e}");
    let e = parse(&doc(
        "<user name='al'><scram-credentials xmlns='urn:xmpp:pie:0#scram' mechanism='SCRAM-SHA-1'>\
         <iter-count>1</iter-count><salt>c2FsdA==</salt><server-key>AA==</server-key>\
         <stored-key>AA==</stored-key></scram-credentials></user>",
    ))
    .unwrap_err();
    assert!(e.0.contains("wrong length"), "{e}");
    let e = parse(&doc(
        "<user name='al'><query xmlns='jabber:iq:roster'><item jid='b@h' subscription='maybe'/></query></user>",
    ))
    .unwrap_err();
    assert!(e.0.contains("b@h") && e.0.contains("maybe"), "{e}");
    assert!(parse(&doc("<user/>")).unwrap_err().0.contains("no name"));
    assert!(parse("<roster/>").unwrap_err().0.contains("XEP-0227"));
    assert!(parse("<server-data xmlns='urn:xmpp:pie:0'>").is_err());
    // Unknown mechanisms and elements are skipped, not errors.
    let hosts = parse(&doc(
        "<user name='al'><scram-credentials xmlns='urn:xmpp:pie:0#scram' mechanism='SCRAM-SHA-224'/>\
         <query xmlns='jabber:iq:privacy'/></user>",
    ))
    .unwrap();
    assert!(hosts[0].users[0].scram.is_empty());
}

#[test]
fn garbage_never_panics() {
    let mut x: u32 = 7;
    let base = PROSODY_ALICE.as_bytes();
    for i in 0..base.len() {
        let _ = parse(&String::from_utf8_lossy(&base[..i]));
    }
    for _ in 0..200 {
        let mut b = base.to_vec();
        for _ in 0..4 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let at = (x as usize >> 8) % b.len();
            b[at] = (x >> 3) as u8;
        }
        let _ = parse(&String::from_utf8_lossy(&b));
    }
}
