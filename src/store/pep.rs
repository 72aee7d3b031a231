//! Publish-subscribe nodes and items, of PEP (XEP-0163, owner an account) and of the XEP-0060
//! service (owner the service's domain; its subscriptions and affiliations are in `pubsub`):
//! per (owner, node) a configuration and the items in publish
//! order. The configuration is an opaque list of (option, value) pairs the PEP service owns
//! (`pubsub#access_model` …); the store only keeps it. Items are (id, payload bytes); the
//! payload is XML the store never parses.
//!
//! Invariants: items exist only under an existing node; a node exists only under an account;
//! an item id is unique within its node (publishing an id again replaces the old item and
//! moves it to the newest position, XEP-0060 §7.1.2).

use redb::{ReadableTable, WriteTransaction};

use super::schema::{next_seq, owner_end, KEY_PEP_SEQ, PEP_ITEMS, PEP_NODES};
use super::{corrupt, require_account, Store, StoreError};

/// A node's configuration as (option, value) pairs, in the service's order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PepNode {
    pub config: Vec<(String, String)>,
}

/// One published item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PepItem {
    pub id: String,
    pub payload: Vec<u8>,
}

const NODE_V1: u8 = 1;
const ITEM_V1: u8 = 1;

impl Store {
    /// The configuration of one node, `None` if it does not exist.
    pub async fn pep_node(&self, owner: &str, node: &str) -> Result<Option<PepNode>, StoreError> {
        let (owner, node) = (owner.to_string(), node.to_string());
        self.read(move |txn| {
            let t = txn.open_table(PEP_NODES)?;
            let row = t.get((owner.as_str(), node.as_str()))?;
            row.map(|v| decode_node(v.value()).map_err(|e| corrupt("pep_nodes", &node, e)))
                .transpose()
        })
        .await
    }

    /// Every node of the owner with its configuration, ordered by node name.
    pub async fn pep_nodes(&self, owner: &str) -> Result<Vec<(String, PepNode)>, StoreError> {
        let owner = owner.to_string();
        self.read(move |txn| {
            let t = txn.open_table(PEP_NODES)?;
            let end = owner_end(&owner);
            let mut out = Vec::new();
            for row in t.range((owner.as_str(), "")..(end.as_str(), ""))? {
                let (k, v) = row?;
                let (o, node) = k.value();
                if o != owner {
                    continue;
                }
                let cfg = decode_node(v.value()).map_err(|e| corrupt("pep_nodes", node, e))?;
                out.push((node.to_string(), cfg));
            }
            Ok(out)
        })
        .await
    }

    /// Creates a node. `AlreadyExists(node)` if it exists, `NotFound` without the account.
    pub async fn pep_create(
        &self,
        owner: &str,
        node: &str,
        cfg: PepNode,
    ) -> Result<(), StoreError> {
        let (owner, node) = (owner.to_string(), node.to_string());
        self.write(move |txn| {
            require_owner(txn, &owner)?;
            let mut t = txn.open_table(PEP_NODES)?;
            if t.get((owner.as_str(), node.as_str()))?.is_some() {
                return Err(StoreError::AlreadyExists(node));
            }
            t.insert(
                (owner.as_str(), node.as_str()),
                encode_node(&cfg).as_slice(),
            )?;
            Ok(())
        })
        .await
    }

    /// Replaces a node's configuration and trims its items to `max_items` (newest kept).
    /// `NotFound` if the node does not exist.
    pub async fn pep_configure(
        &self,
        owner: &str,
        node: &str,
        cfg: PepNode,
        max_items: usize,
    ) -> Result<(), StoreError> {
        let (owner, node) = (owner.to_string(), node.to_string());
        self.write(move |txn| {
            let mut t = txn.open_table(PEP_NODES)?;
            if t.get((owner.as_str(), node.as_str()))?.is_none() {
                return Err(StoreError::NotFound);
            }
            t.insert(
                (owner.as_str(), node.as_str()),
                encode_node(&cfg).as_slice(),
            )?;
            trim(txn, &owner, &node, max_items)
        })
        .await
    }

    /// Publishes an item: creates the node with `create` when it does not exist, replaces an
    /// item with the same id, then trims the node to `max_items` (newest kept). Returns the
    /// node's configuration after the call. `NotFound` without the account.
    pub async fn pep_publish(
        &self,
        owner: &str,
        node: &str,
        create: PepNode,
        item: PepItem,
        max_items: usize,
    ) -> Result<PepNode, StoreError> {
        let (owner, node) = (owner.to_string(), node.to_string());
        self.write(move |txn| {
            require_owner(txn, &owner)?;
            let cfg = {
                let mut t = txn.open_table(PEP_NODES)?;
                let existing = t
                    .get((owner.as_str(), node.as_str()))?
                    .map(|v| decode_node(v.value()));
                match existing {
                    Some(cfg) => cfg.map_err(|e| corrupt("pep_nodes", &node, e))?,
                    None => {
                        t.insert(
                            (owner.as_str(), node.as_str()),
                            encode_node(&create).as_slice(),
                        )?;
                        create
                    }
                }
            };
            remove_item(txn, &owner, &node, &item.id)?;
            let seq = next_seq(txn, KEY_PEP_SEQ)?;
            txn.open_table(PEP_ITEMS)?.insert(
                (owner.as_str(), node.as_str(), seq),
                encode_item(&item).as_slice(),
            )?;
            trim(txn, &owner, &node, max_items)?;
            Ok(cfg)
        })
        .await
    }

    /// A node's items, oldest first. Empty for a missing node.
    pub async fn pep_items(&self, owner: &str, node: &str) -> Result<Vec<PepItem>, StoreError> {
        let (owner, node) = (owner.to_string(), node.to_string());
        self.read(move |txn| {
            let t = txn.open_table(PEP_ITEMS)?;
            let mut out = Vec::new();
            for row in t.range(
                (owner.as_str(), node.as_str(), 0)..=(owner.as_str(), node.as_str(), u64::MAX),
            )? {
                let (_, v) = row?;
                out.push(decode_item(v.value()).map_err(|e| corrupt("pep_items", &node, e))?);
            }
            Ok(out)
        })
        .await
    }

    /// Removes one item; returns whether it existed.
    pub async fn pep_retract(&self, owner: &str, node: &str, id: &str) -> Result<bool, StoreError> {
        let (owner, node, id) = (owner.to_string(), node.to_string(), id.to_string());
        self.write(move |txn| remove_item(txn, &owner, &node, &id))
            .await
    }

    /// Removes every item of a node, keeping the node (XEP-0060 §8.5 purge).
    pub async fn pep_purge(&self, owner: &str, node: &str) -> Result<(), StoreError> {
        let (owner, node) = (owner.to_string(), node.to_string());
        self.write(move |txn| trim(txn, &owner, &node, 0)).await
    }

    /// Deletes a node and its items; returns whether the node existed.
    pub async fn pep_delete(&self, owner: &str, node: &str) -> Result<bool, StoreError> {
        let (owner, node) = (owner.to_string(), node.to_string());
        self.write(move |txn| {
            let existed = txn
                .open_table(PEP_NODES)?
                .remove((owner.as_str(), node.as_str()))?
                .is_some();
            trim(txn, &owner, &node, 0)?;
            super::pubsub::forget_node(txn, &owner, &node)?;
            Ok(existed)
        })
        .await
    }
}

/// A node owner is an account (`user@domain`: PEP), whose row must exist, or a service's
/// domain (`pubsub.domain`: the XEP-0060 service), which has no account row. Account JIDs
/// always have a local part, service domains never do.
fn require_owner(txn: &WriteTransaction, owner: &str) -> Result<(), StoreError> {
    if owner.contains('@') {
        require_account(txn, owner)
    } else {
        Ok(())
    }
}

/// Removes the item `id` of a node; whether it existed.
fn remove_item(
    txn: &WriteTransaction,
    owner: &str,
    node: &str,
    id: &str,
) -> Result<bool, StoreError> {
    let mut t = txn.open_table(PEP_ITEMS)?;
    let mut found = None;
    for row in t.range((owner, node, 0)..=(owner, node, u64::MAX))? {
        let (k, v) = row?;
        let item = decode_item(v.value()).map_err(|e| corrupt("pep_items", node, e))?;
        if item.id == id {
            found = Some(k.value().2);
            break;
        }
    }
    match found {
        Some(seq) => {
            t.remove((owner, node, seq))?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// Keeps the newest `max` items of a node.
fn trim(txn: &WriteTransaction, owner: &str, node: &str, max: usize) -> Result<(), StoreError> {
    let mut t = txn.open_table(PEP_ITEMS)?;
    let mut seqs = Vec::new();
    for row in t.range((owner, node, 0)..=(owner, node, u64::MAX))? {
        seqs.push(row?.0.value().2);
    }
    let excess = seqs.len().saturating_sub(max);
    for seq in &seqs[..excess] {
        t.remove((owner, node, *seq))?;
    }
    Ok(())
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&u32::try_from(b.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(b);
}

fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
    if n > buf.len() {
        return Err(format!(
            "truncated value: needed {n} bytes, {} left",
            buf.len()
        ));
    }
    let (head, tail) = buf.split_at(n);
    *buf = tail;
    Ok(head)
}

fn take_u32(buf: &mut &[u8]) -> Result<u32, String> {
    let b = take(buf, 4)?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn take_bytes<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8], String> {
    let n = take_u32(buf)? as usize;
    take(buf, n)
}

fn take_string(buf: &mut &[u8]) -> Result<String, String> {
    String::from_utf8(take_bytes(buf)?.to_vec()).map_err(|_| "string is not UTF-8".to_string())
}

fn take_version(buf: &mut &[u8], expected: u8) -> Result<(), String> {
    match take(buf, 1)?[0] {
        v if v == expected => Ok(()),
        v => Err(format!("unknown codec version {v}")),
    }
}

fn finish(buf: &[u8]) -> Result<(), String> {
    if buf.is_empty() {
        Ok(())
    } else {
        Err(format!("{} trailing bytes", buf.len()))
    }
}

fn encode_node(n: &PepNode) -> Vec<u8> {
    let mut out = vec![NODE_V1];
    out.extend_from_slice(
        &u32::try_from(n.config.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    for (k, v) in &n.config {
        put_bytes(&mut out, k.as_bytes());
        put_bytes(&mut out, v.as_bytes());
    }
    out
}

fn decode_node(mut buf: &[u8]) -> Result<PepNode, String> {
    let buf = &mut buf;
    take_version(buf, NODE_V1)?;
    let n = take_u32(buf)? as usize;
    let mut config = Vec::new();
    for _ in 0..n {
        // Each pair needs at least 8 bytes, so a bogus count fails on the data, not on memory.
        let k = take_string(buf)?;
        let v = take_string(buf)?;
        config.push((k, v));
    }
    finish(buf)?;
    Ok(PepNode { config })
}

fn encode_item(i: &PepItem) -> Vec<u8> {
    let mut out = vec![ITEM_V1];
    put_bytes(&mut out, i.id.as_bytes());
    put_bytes(&mut out, &i.payload);
    out
}

fn decode_item(mut buf: &[u8]) -> Result<PepItem, String> {
    let buf = &mut buf;
    take_version(buf, ITEM_V1)?;
    let id = take_string(buf)?;
    let payload = take_bytes(buf)?.to_vec();
    finish(buf)?;
    Ok(PepItem { id, payload })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (Store, std::path::PathBuf) {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "kith-pep-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        (Store::open(&dir.join("kith.redb")).unwrap(), dir)
    }

    fn item(id: &str) -> PepItem {
        PepItem {
            id: id.into(),
            payload: id.as_bytes().to_vec(),
        }
    }

    /// The PEP tables came after schema 1 shipped: a data file without them gets them when it
    /// opens, with no migration and no version change.
    #[test]
    fn an_existing_file_gains_the_pep_tables() {
        let (s, dir) = store();
        let path = s.path().to_path_buf();
        smol::block_on(s.create_account("alice@x", vec![])).unwrap();
        {
            let txn = super::super::begin_write(&s.inner.file.handle().unwrap()).unwrap();
            txn.delete_table(PEP_NODES).unwrap();
            txn.delete_table(PEP_ITEMS).unwrap();
            txn.commit().unwrap();
        }
        drop(s);
        let s = Store::open(&path).unwrap();
        smol::block_on(async {
            assert!(s.pep_nodes("alice@x").await.unwrap().is_empty());
            s.pep_publish("alice@x", "n", PepNode::default(), item("a"), 1)
                .await
                .unwrap();
        });
        drop(s);
        let s = Store::open(&path).unwrap();
        let items = smol::block_on(s.pep_items("alice@x", "n")).unwrap();
        assert_eq!(items, [item("a")]);
        drop(s);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn publish_replaces_ids_trims_and_cascades() {
        let (s, dir) = store();
        smol::block_on(async {
            s.create_account("alice@x", vec![]).await.unwrap();
            s.create_account("al@x", vec![]).await.unwrap();
            let cfg = PepNode {
                config: vec![("pubsub#max_items".into(), "2".into())],
            };
            s.pep_publish("alice@x", "n", cfg.clone(), item("a"), 2)
                .await
                .unwrap();
            s.pep_publish("alice@x", "n", cfg.clone(), item("b"), 2)
                .await
                .unwrap();
            s.pep_publish("alice@x", "n", cfg.clone(), item("a"), 2)
                .await
                .unwrap();
            let ids: Vec<_> = s
                .pep_items("alice@x", "n")
                .await
                .unwrap()
                .into_iter()
                .map(|i| i.id)
                .collect();
            assert_eq!(ids, ["b", "a"]);
            s.pep_publish("alice@x", "n", cfg.clone(), item("c"), 2)
                .await
                .unwrap();
            let ids: Vec<_> = s
                .pep_items("alice@x", "n")
                .await
                .unwrap()
                .into_iter()
                .map(|i| i.id)
                .collect();
            assert_eq!(ids, ["a", "c"]);
            assert_eq!(s.pep_node("alice@x", "n").await.unwrap(), Some(cfg.clone()));
            s.pep_publish("al@x", "n", cfg.clone(), item("z"), 2)
                .await
                .unwrap();
            assert!(s.pep_retract("alice@x", "n", "a").await.unwrap());
            assert!(!s.pep_retract("alice@x", "n", "a").await.unwrap());
            assert!(s.delete_account("alice@x").await.unwrap());
            assert!(s.pep_nodes("alice@x").await.unwrap().is_empty());
            assert!(s.pep_items("alice@x", "n").await.unwrap().is_empty());
            assert_eq!(s.pep_items("al@x", "n").await.unwrap().len(), 1);
            assert!(matches!(
                s.pep_publish("alice@x", "n", cfg, item("a"), 2).await,
                Err(StoreError::NotFound)
            ));
        });
        drop(s);
        let _ = std::fs::remove_dir_all(dir);
    }
}
