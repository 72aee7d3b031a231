//! Members of the XEP-0060 service's nodes: per (service, node, JID) the affiliation and
//! whether the JID is subscribed. Nodes and items themselves are the shared `pep` tables,
//! owned by the service's domain. The affiliation is a name the service owns (`owner`,
//! `publisher`, …); the store only keeps it.
//!
//! Invariants: a member row exists only under an existing node (`pep_delete` removes the
//! node's rows); a row that is neither affiliated nor subscribed is not kept.

use redb::{ReadableTable, WriteTransaction};

use super::schema::{PEP_NODES, PUBSUB_MEMBERS};
use super::{corrupt, Store, StoreError};

/// One JID's standing on a node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PubsubMember {
    /// XEP-0060 §4.1 affiliation name; empty means `none`.
    pub affiliation: String,
    pub subscribed: bool,
}

impl PubsubMember {
    fn is_empty(&self) -> bool {
        !self.subscribed && (self.affiliation.is_empty() || self.affiliation == "none")
    }
}

const MEMBER_V1: u8 = 1;

fn encode(m: &PubsubMember) -> Vec<u8> {
    let mut out = vec![MEMBER_V1, u8::from(m.subscribed)];
    out.extend_from_slice(m.affiliation.as_bytes());
    out
}

fn decode(buf: &[u8]) -> Result<PubsubMember, String> {
    match buf {
        [MEMBER_V1, sub @ (0 | 1), aff @ ..] => Ok(PubsubMember {
            affiliation: String::from_utf8(aff.to_vec())
                .map_err(|_| "affiliation is not UTF-8".to_string())?,
            subscribed: *sub == 1,
        }),
        [v, ..] => Err(format!("unknown member codec version {v} or flag")),
        [] => Err("empty member value".into()),
    }
}

/// Removes every member row of a node (the node is being deleted).
pub(super) fn forget_node(
    txn: &WriteTransaction,
    owner: &str,
    node: &str,
) -> Result<(), StoreError> {
    let mut end = node.to_string();
    end.push('\0');
    txn.open_table(PUBSUB_MEMBERS)?
        .retain_in((owner, node, "")..(owner, end.as_str(), ""), |_, _| false)?;
    Ok(())
}

impl Store {
    /// Every member of a node, by JID.
    pub async fn pubsub_members(
        &self,
        owner: &str,
        node: &str,
    ) -> Result<Vec<(String, PubsubMember)>, StoreError> {
        let (owner, node) = (owner.to_string(), node.to_string());
        self.read(move |txn| {
            let t = txn.open_table(PUBSUB_MEMBERS)?;
            let mut end = node.clone();
            end.push('\0');
            let mut out = Vec::new();
            for row in
                t.range((owner.as_str(), node.as_str(), "")..(owner.as_str(), end.as_str(), ""))?
            {
                let (k, v) = row?;
                let (_, _, jid) = k.value();
                let m = decode(v.value()).map_err(|e| corrupt("pubsub_members", jid, e))?;
                out.push((jid.to_string(), m));
            }
            Ok(out)
        })
        .await
    }

    /// Every (node, membership) of one JID under a service.
    pub async fn pubsub_memberships(
        &self,
        owner: &str,
        jid: &str,
    ) -> Result<Vec<(String, PubsubMember)>, StoreError> {
        let (owner, jid) = (owner.to_string(), jid.to_string());
        self.read(move |txn| {
            let t = txn.open_table(PUBSUB_MEMBERS)?;
            let mut end = owner.clone();
            end.push('\0');
            let mut out = Vec::new();
            for row in t.range((owner.as_str(), "", "")..(end.as_str(), "", ""))? {
                let (k, v) = row?;
                let (_, node, j) = k.value();
                if j == jid {
                    let m = decode(v.value()).map_err(|e| corrupt("pubsub_members", j, e))?;
                    out.push((node.to_string(), m));
                }
            }
            Ok(out)
        })
        .await
    }

    /// One JID's standing on a node; the default (none, unsubscribed) when it has none.
    pub async fn pubsub_member(
        &self,
        owner: &str,
        node: &str,
        jid: &str,
    ) -> Result<PubsubMember, StoreError> {
        let (owner, node, jid) = (owner.to_string(), node.to_string(), jid.to_string());
        self.read(move |txn| {
            let t = txn.open_table(PUBSUB_MEMBERS)?;
            let row = t.get((owner.as_str(), node.as_str(), jid.as_str()))?;
            match row {
                Some(v) => decode(v.value()).map_err(|e| corrupt("pubsub_members", &jid, e)),
                None => Ok(PubsubMember::default()),
            }
        })
        .await
    }

    /// Stores one JID's standing on a node (an empty one removes the row). `NotFound` when
    /// the node does not exist.
    pub async fn pubsub_set_member(
        &self,
        owner: &str,
        node: &str,
        jid: &str,
        member: PubsubMember,
    ) -> Result<(), StoreError> {
        let (owner, node, jid) = (owner.to_string(), node.to_string(), jid.to_string());
        self.write(move |txn| {
            if txn
                .open_table(PEP_NODES)?
                .get((owner.as_str(), node.as_str()))?
                .is_none()
            {
                return Err(StoreError::NotFound);
            }
            let mut t = txn.open_table(PUBSUB_MEMBERS)?;
            let key = (owner.as_str(), node.as_str(), jid.as_str());
            if member.is_empty() {
                t.remove(key)?;
            } else {
                t.insert(key, encode(&member).as_slice())?;
            }
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::PepNode;

    #[test]
    fn members_live_and_die_with_their_node() {
        let dir = std::env::temp_dir().join(format!("kith-pubsub-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let s = Store::open(&dir.join("kith.redb")).unwrap();
        smol::block_on(async {
            let svc = "pubsub.x";
            let sub = PubsubMember {
                affiliation: String::new(),
                subscribed: true,
            };
            assert_eq!(
                s.pubsub_set_member(svc, "n", "bob@x", sub.clone()).await,
                Err(StoreError::NotFound)
            );
            // A service owns nodes without an account row.
            s.pep_create(svc, "n", PepNode::default()).await.unwrap();
            s.pep_create(svc, "n2", PepNode::default()).await.unwrap();
            s.pubsub_set_member(svc, "n", "bob@x", sub.clone())
                .await
                .unwrap();
            s.pubsub_set_member(svc, "n2", "bob@x", sub.clone())
                .await
                .unwrap();
            let owner = PubsubMember {
                affiliation: "owner".into(),
                subscribed: false,
            };
            s.pubsub_set_member(svc, "n", "alice@x", owner.clone())
                .await
                .unwrap();
            assert_eq!(s.pubsub_member(svc, "n", "bob@x").await.unwrap(), sub);
            assert_eq!(s.pubsub_members(svc, "n").await.unwrap().len(), 2);
            assert_eq!(s.pubsub_memberships(svc, "bob@x").await.unwrap().len(), 2);
            s.pubsub_set_member(svc, "n", "bob@x", PubsubMember::default())
                .await
                .unwrap();
            assert_eq!(
                s.pubsub_members(svc, "n").await.unwrap(),
                [("alice@x".to_string(), owner)]
            );
            assert!(s.pep_delete(svc, "n").await.unwrap());
            assert!(s.pubsub_members(svc, "n").await.unwrap().is_empty());
            assert_eq!(s.pubsub_members(svc, "n2").await.unwrap().len(), 1);
            // PEP still needs the account.
            assert_eq!(
                s.pep_create("carol@x", "n", PepNode::default()).await,
                Err(StoreError::NotFound)
            );
        });
        drop(s);
        let _ = std::fs::remove_dir_all(dir);
    }
}
