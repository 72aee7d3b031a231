//! XEP-0054 vcard-temp, kept in step with PEP avatars by XEP-0398 (User Avatar to vCard-Based
//! Avatars Conversion) and XEP-0153 (vCard-Based Avatars) presence hashes.
//!
//! The vCard is stored as XML in the account's private kv area. Its PHOTO is not the source of
//! truth: the XEP-0084 avatar in PEP is. A get fills PHOTO from the avatar nodes (when the
//! requester may see them); a set with a PHOTO publishes that image as the avatar. The
//! XEP-0153 hash of an image is its SHA-1, which is also its XEP-0084 item id, so both kinds of
//! client agree on which avatar is current.

use base64::Engine;

use crate::jid::{BareJid, FullJid};
use crate::router::{bounce, deliver_reply};
use crate::server::Server;
use crate::services::pep;
use crate::services::roster::store_error;
use crate::stanza::{self, Condition};
use crate::xml::Element;

pub const NS_VCARD: &str = "vcard-temp";
pub const NS_VCARD_UPDATE: &str = "vcard-temp:x:update";
pub const NS_CONVERSION: &str = "urn:xmpp:pep-vcard-conversion:0";
pub const NODE_AVATAR_DATA: &str = "urn:xmpp:avatar:data";
pub const NODE_AVATAR_METADATA: &str = "urn:xmpp:avatar:metadata";
const KV_KEY: &str = "vcard-temp";
/// Largest avatar image accepted through vcard-temp (decoded bytes).
const MAX_PHOTO: usize = 192 * 1024;

/// vcard-temp get for `owner`'s vCard, by anyone (XEP-0054 §3.2: vCards are public).
pub async fn get(srv: &Server, from: &FullJid, owner: &BareJid, iq: Element) {
    let stored = match srv.store.kv_get(owner.as_ref(), KV_KEY).await {
        Ok(v) => v,
        Err(e) => return bounce(srv, &iq, store_error(e)),
    };
    let mut vcard = stored
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| Element::parse(&s).ok())
        .unwrap_or_else(|| Element::new("vCard", NS_VCARD));
    match avatar(srv, owner, &from.to_bare()).await {
        Some(Some((mime, data))) => {
            vcard.retain_children(|c| !c.is("PHOTO", NS_VCARD));
            vcard.push_child(
                Element::new("PHOTO", NS_VCARD)
                    .with_child(Element::new("TYPE", NS_VCARD).with_text(mime))
                    .with_child(Element::new("BINVAL", NS_VCARD).with_text(data)),
            );
        }
        // The avatar was disabled (empty metadata) or is not visible to the requester.
        Some(None) => vcard.retain_children(|c| !c.is("PHOTO", NS_VCARD)),
        None => {}
    }
    deliver_reply(srv, stanza::iq_result(&iq, Some(vcard)));
}

/// The avatar as (MIME type, base64 data): `None` when the account never had a PEP avatar,
/// `Some(None)` when it has none now or `who` may not see it.
async fn avatar(srv: &Server, owner: &BareJid, who: &BareJid) -> Option<Option<(String, String)>> {
    let meta = match pep::last_item(srv, owner, who, NODE_AVATAR_METADATA).await {
        Ok(Some(m)) => m,
        Ok(None) => {
            // No visible metadata node: either none at all, or hidden from `who`.
            return match srv
                .store
                .pep_node(owner.as_ref(), NODE_AVATAR_METADATA)
                .await
            {
                Ok(Some(_)) => Some(None),
                _ => None,
            };
        }
        Err(e) => {
            log::error!("store: {e}");
            return None;
        }
    };
    let Some(info) = meta
        .as_ref()
        .and_then(|m| m.get_child("info", NODE_AVATAR_METADATA))
    else {
        return Some(None);
    };
    let id = info.attr("id").unwrap_or("");
    let mime = info.attr("type").unwrap_or("image/png").to_string();
    let items = match srv.store.pep_items(owner.as_ref(), NODE_AVATAR_DATA).await {
        Ok(i) => i,
        Err(e) => {
            log::error!("store: {e}");
            return Some(None);
        }
    };
    let data = items.into_iter().find(|i| i.id == id).and_then(|i| {
        let s = String::from_utf8(i.payload).ok()?;
        Some(Element::parse(&s).ok()?.text())
    });
    Some(data.map(|d| (mime, d.split_whitespace().collect())))
}

/// vcard-temp set of the sender's own vCard; a PHOTO is published as the PEP avatar.
pub async fn set(srv: &Server, from: &FullJid, iq: Element) {
    let owner = from.to_bare();
    let Some(vcard) = iq.get_child("vCard", NS_VCARD) else {
        return bounce(srv, &iq, Condition::BadRequest.into());
    };
    let mut stored = vcard.clone();
    if let Some(photo) = vcard.get_child("PHOTO", NS_VCARD) {
        let binval: String = photo
            .get_child("BINVAL", NS_VCARD)
            .map(|b| b.text().split_whitespace().collect())
            .unwrap_or_default();
        let result = if binval.is_empty() {
            disable_avatar(srv, &owner).await
        } else {
            let mime = photo
                .get_child("TYPE", NS_VCARD)
                .map(|t| t.text().trim().to_string())
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| "image/png".into());
            publish_avatar(srv, &owner, &mime, &binval).await
        };
        if let Err(c) = result {
            return bounce(srv, &iq, c.into());
        }
        // The image now lives in PEP, the one source of truth (see `get`).
        stored.retain_children(|c| !c.is("PHOTO", NS_VCARD));
    }
    if let Err(e) = srv
        .store
        .kv_set(owner.as_ref(), KV_KEY, Some(stored.to_bytes_in("")))
        .await
    {
        return bounce(srv, &iq, store_error(e));
    }
    deliver_reply(srv, stanza::iq_result(&iq, None));
}

/// The SHA-1 of image bytes, hex: XEP-0084 item id and XEP-0153 photo hash.
pub fn photo_hash(bytes: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, bytes);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Publishes data then metadata (XEP-0084 §4.1 order), with the nodes' existing access or,
/// for new nodes, `open` (a vcard-temp avatar was public).
async fn publish_avatar(
    srv: &Server,
    owner: &BareJid,
    mime: &str,
    b64: &str,
) -> Result<(), Condition> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| Condition::BadRequest)?;
    if bytes.len() > MAX_PHOTO {
        return Err(Condition::NotAcceptable);
    }
    let id = photo_hash(&bytes);
    let options = avatar_options(srv, owner).await;
    let data = Element::new("data", NODE_AVATAR_DATA).with_text(b64);
    pep::publish_item(
        srv,
        owner,
        NODE_AVATAR_DATA,
        &options,
        id.clone(),
        Some(data),
    )
    .await
    .map_err(|_| Condition::InternalServerError)?;
    let meta = Element::new("metadata", NODE_AVATAR_METADATA).with_child(
        Element::new("info", NODE_AVATAR_METADATA)
            .with_attr("id", id.as_str())
            .with_attr("bytes", bytes.len().to_string())
            .with_attr("type", mime),
    );
    pep::publish_item(srv, owner, NODE_AVATAR_METADATA, &options, id, Some(meta))
        .await
        .map_err(|_| Condition::InternalServerError)?;
    Ok(())
}

async fn disable_avatar(srv: &Server, owner: &BareJid) -> Result<(), Condition> {
    let options = avatar_options(srv, owner).await;
    let meta = Element::new("metadata", NODE_AVATAR_METADATA);
    pep::publish_item(
        srv,
        owner,
        NODE_AVATAR_METADATA,
        &options,
        "current".into(),
        Some(meta),
    )
    .await
    .map_err(|_| Condition::InternalServerError)?;
    Ok(())
}

async fn avatar_options(srv: &Server, owner: &BareJid) -> Vec<(String, String)> {
    match srv
        .store
        .pep_node(owner.as_ref(), NODE_AVATAR_METADATA)
        .await
    {
        Ok(Some(_)) => Vec::new(),
        _ => vec![("pubsub#access_model".into(), "open".into())],
    }
}

/// XEP-0153 §4.1 / XEP-0398 §4: the server puts the current avatar hash into the user's
/// available presence (`<x xmlns='vcard-temp:x:update'><photo>hash</photo></x>`), replacing
/// what the client said, so vCard-avatar clients see PEP avatar changes. Presence of an account
/// that never had a PEP avatar is left alone.
pub async fn stamp_presence(srv: &Server, owner: &BareJid, mut presence: Element) -> Element {
    let meta = match srv
        .store
        .pep_items(owner.as_ref(), NODE_AVATAR_METADATA)
        .await
    {
        Ok(mut items) => match items.pop() {
            Some(i) => i,
            None => return presence,
        },
        Err(_) => return presence,
    };
    let hash = std::str::from_utf8(&meta.payload)
        .ok()
        .and_then(|s| Element::parse(s).ok())
        .and_then(|m| {
            m.get_child("info", NODE_AVATAR_METADATA)
                .and_then(|i| i.attr("id").map(str::to_string))
        })
        .unwrap_or_default();
    presence.retain_children(|c| !c.is("x", NS_VCARD_UPDATE));
    let photo = Element::new("photo", NS_VCARD_UPDATE);
    let photo = if hash.is_empty() {
        photo
    } else {
        photo.with_text(hash)
    };
    presence.push_child(Element::new("x", NS_VCARD_UPDATE).with_child(photo));
    presence
}

/// An empty vCard: the server's own (XEP-0054 §3.1 asks servers to answer for themselves).
pub fn server_vcard() -> Element {
    Element::new("vCard", NS_VCARD)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn photo_hash_is_hex_sha1() {
        assert_eq!(
            photo_hash(b"abc"),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
    }
}
