//! Small informational XEPs: XEP-0092 software version, XEP-0202 entity time, XEP-0012 last
//! activity (server uptime and an account's idle time).

use crate::jid::{BareJid, FullJid};
use crate::server::Server;
use crate::stanza::{ns, Condition};
use crate::xml::Element;

/// XEP-0092. The OS is left out on purpose: it helps attackers more than users.
pub fn version() -> Element {
    Element::new("query", ns::VERSION)
        .with_child(Element::new("name", ns::VERSION).with_text("kith"))
        .with_child(Element::new("version", ns::VERSION).with_text(env!("CARGO_PKG_VERSION")))
}

/// XEP-0202: the server keeps UTC.
pub fn time() -> Element {
    Element::new("time", ns::TIME)
        .with_child(Element::new("tzo", ns::TIME).with_text("+00:00"))
        .with_child(
            Element::new("utc", ns::TIME).with_text(crate::time::rfc3339(crate::time::now_unix())),
        )
}

/// XEP-0012 §5: last activity of the server is its uptime.
pub fn uptime(srv: &Server) -> Element {
    Element::new("query", ns::LAST)
        .with_attr("seconds", srv.started.elapsed().as_secs().to_string())
}

/// XEP-0012 §4: an account's last activity, only for the account itself and contacts with a
/// presence subscription to it (its presence is theirs to know anyway).
pub async fn last_activity(
    srv: &Server,
    from: &FullJid,
    to: &BareJid,
) -> Result<Element, Condition> {
    let owner = to.to_string();
    if from.to_bare() != *to {
        let item = srv
            .store
            .roster_item(&owner, from.to_bare().as_ref())
            .await
            .map_err(|_| Condition::InternalServerError)?;
        let allowed = item.is_some_and(|i| matches!(i.subscription.as_str(), "from" | "both"));
        if !allowed {
            return Err(Condition::Forbidden);
        }
    }
    if srv.sessions.resources(to).iter().any(|r| r.available) {
        return Ok(Element::new("query", ns::LAST).with_attr("seconds", "0"));
    }
    match srv.store.last(&owner).await {
        Ok(Some((unix, status))) => {
            let secs = crate::time::now_unix().saturating_sub(unix);
            let mut q = Element::new("query", ns::LAST).with_attr("seconds", secs.to_string());
            if !status.is_empty() {
                q.push_text(status);
            }
            Ok(q)
        }
        Ok(None) => Err(Condition::ServiceUnavailable),
        Err(_) => Err(Condition::InternalServerError),
    }
}
