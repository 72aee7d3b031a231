//! Circles (shared roster groups, like Prosody's mod_groups and Snikket's circles): the
//! members of a circle see each other in their contact lists, with the circle's name as the
//! roster group, and exchange presence.
//!
//! Circles come from `[circles]` in the config and from the store (`kith circle add`, invites
//! with `--group`). Membership is turned into real roster items with subscription `both`
//! (written through the store like any roster change, with roster pushes and presence sent),
//! rather than items faked on every roster get: presence, probes, PEP access and blocking then
//! work unchanged, and a client's cached roster version stays truthful. `sync` brings rosters
//! up to date at start-up and after every membership change; leaving a circle drops its group
//! from the items, and removes items that were there only because of circles.
//!
//! Also here: `befriend`, the mutual subscription an invite creates between inviter and
//! invitee (the same roster write, without a group).

use std::collections::{BTreeMap, BTreeSet};

use crate::accounts;
use crate::jid::BareJid;
use crate::server::Server;
use crate::services::{presence, roster};
use crate::store::{RosterItem, Subscription};

/// Circle name → member bare JIDs (config and store merged; accounts that do not exist are
/// left out until they do).
pub async fn all(srv: &Server) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let domain = srv.domain();
    for c in &srv.config.circles {
        let set = out.entry(c.name.clone()).or_default();
        for m in &c.members {
            if let Ok(jid) = accounts::account_jid(m, domain) {
                set.insert(jid.to_string());
            }
        }
    }
    match srv.store.circle_members().await {
        Ok(rows) => {
            for (c, m) in rows {
                out.entry(c).or_default().insert(m);
            }
        }
        Err(e) => log::error!("circles: cannot read circle members: {e}"),
    }
    let accounts: BTreeSet<String> = match srv.store.list_accounts().await {
        Ok(a) => a.into_iter().collect(),
        Err(e) => {
            log::error!("circles: cannot list accounts: {e}");
            return BTreeMap::new();
        }
    };
    for members in out.values_mut() {
        members.retain(|m| accounts.contains(m));
    }
    out
}

/// The names of the circles both `a` and `b` are in.
fn shared<'c>(circles: &'c BTreeMap<String, BTreeSet<String>>, a: &str, b: &str) -> Vec<&'c str> {
    circles
        .iter()
        .filter(|(_, m)| m.contains(a) && m.contains(b))
        .map(|(c, _)| c.as_str())
        .collect()
}

/// Makes every pair of members of a common circle mutual contacts with the circle's group.
/// Idempotent: writes (and pushes) only what differs.
pub async fn sync(srv: &Server) {
    let circles = all(srv).await;
    let mut pairs: BTreeSet<(&str, &str)> = BTreeSet::new();
    for members in circles.values() {
        for a in members {
            for b in members {
                if a != b {
                    pairs.insert((a.as_str(), b.as_str()));
                }
            }
        }
    }
    for (a, b) in pairs {
        let (Ok(ja), Ok(jb)) = (BareJid::parse(a), BareJid::parse(b)) else {
            continue;
        };
        let groups = shared(&circles, a, b);
        set_mutual_half(srv, &ja, &jb, &groups).await;
    }
}

/// After `member` left `circle` (already removed from the store or config): drops the group
/// from the items between `member` and the circle's other members, and removes the items that
/// were there only for circles (no other group left and no other circle shared).
pub async fn left(srv: &Server, circle: &str, member: &BareJid, others: &BTreeSet<String>) {
    let circles = all(srv).await;
    let me = member.to_string();
    for other in others {
        if *other == me {
            continue;
        }
        let Ok(other_jid) = BareJid::parse(other) else {
            continue;
        };
        let still = shared(&circles, &me, other);
        for (owner, contact) in [(member, &other_jid), (&other_jid, member)] {
            drop_group(srv, owner, contact, circle, still.is_empty()).await;
        }
    }
}

/// The inviter and the invitee of an invite become mutual contacts (XEP-0379).
pub async fn befriend(srv: &Server, a: &BareJid, b: &BareJid) {
    set_mutual_half(srv, a, b, &[]).await;
    set_mutual_half(srv, b, a, &[]).await;
}

/// `owner`'s item for `contact`: subscription `both`, `groups` added. Sends presence both ways
/// when the subscription is new, as an approved subscription would.
async fn set_mutual_half(srv: &Server, owner: &BareJid, contact: &BareJid, groups: &[&str]) {
    let (o, c) = (owner.to_string(), contact.to_string());
    let _lock = srv.lock_account(owner).await;
    let existing = match srv.store.roster_item(&o, &c).await {
        Ok(i) => i,
        Err(e) => return log::error!("circles: cannot read roster item {o} -> {c}: {e}"),
    };
    let mut item = existing.clone().unwrap_or_else(roster::empty_item);
    let was_both = item.subscription == Subscription::Both;
    item.subscription = Subscription::Both;
    item.ask = false;
    for g in groups {
        if !item.groups.iter().any(|x| x == g) {
            item.groups.push(g.to_string());
        }
    }
    if existing.as_ref() == Some(&item) {
        return;
    }
    match srv.store.set_roster_item(&o, &c, Some(item.clone())).await {
        Ok(ver) => roster::push(srv, owner, &c, Some(&item), ver),
        Err(e) => return log::error!("circles: cannot store roster item {o} -> {c}: {e}"),
    }
    if !was_both {
        presence::send_current_to(srv, owner, contact);
        presence::send_current_to(srv, contact, owner);
    }
}

async fn drop_group(srv: &Server, owner: &BareJid, contact: &BareJid, circle: &str, remove: bool) {
    let (o, c) = (owner.to_string(), contact.to_string());
    let _lock = srv.lock_account(owner).await;
    let Ok(Some(item)) = srv.store.roster_item(&o, &c).await else {
        return;
    };
    let circle_names: BTreeSet<String> = all_names(srv).await;
    let groups: Vec<String> = item
        .groups
        .iter()
        .filter(|g| *g != circle)
        .cloned()
        .collect();
    let only_circles = groups.iter().all(|g| circle_names.contains(g));
    let new: Option<RosterItem> = if remove && only_circles {
        None
    } else {
        Some(RosterItem {
            groups,
            ..item.clone()
        })
    };
    if new.as_ref() == Some(&item) {
        return;
    }
    if new.is_none() {
        presence::send_unavailable_to(srv, owner, contact);
    }
    match srv.store.set_roster_item(&o, &c, new.clone()).await {
        Ok(ver) => roster::push(srv, owner, &c, new.as_ref(), ver),
        Err(e) => log::error!("circles: cannot update roster item {o} -> {c}: {e}"),
    }
}

async fn all_names(srv: &Server) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = srv.config.circles.iter().map(|c| c.name.clone()).collect();
    if let Ok(rows) = srv.store.circle_members().await {
        names.extend(rows.into_iter().map(|(c, _)| c));
    }
    names
}

/// `kith circle add`: adds a member and syncs rosters.
pub async fn add(srv: &Server, circle: &str, member: &BareJid) -> Result<bool, String> {
    let new = srv
        .store
        .circle_add(circle, member.as_ref())
        .await
        .map_err(|e| e.to_string())?;
    sync(srv).await;
    Ok(new)
}

/// `kith circle remove`: removes a store member (config members stay: edit the file).
pub async fn remove(srv: &Server, circle: &str, member: &BareJid) -> Result<bool, String> {
    let was = srv
        .store
        .circle_remove(circle, member.as_ref())
        .await
        .map_err(|e| e.to_string())?;
    let others = all(srv).await.remove(circle).unwrap_or_default();
    // Still a member through the config file: nothing changes for the rosters.
    if was && !others.contains(member.as_str()) {
        left(srv, circle, member, &others).await;
    }
    Ok(was)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_lists_common_circles() {
        let mut c: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        c.insert(
            "family".into(),
            ["a@d", "b@d", "c@d"].map(String::from).into(),
        );
        c.insert("work".into(), ["a@d", "b@d"].map(String::from).into());
        assert_eq!(shared(&c, "a@d", "b@d"), ["family", "work"]);
        assert_eq!(shared(&c, "a@d", "c@d"), ["family"]);
        assert!(shared(&c, "a@d", "x@d").is_empty());
    }
}
