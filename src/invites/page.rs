//! The HTML of the invite and registration pages: server-rendered, one inline style sheet, no
//! script, readable on a phone. Pure: every function takes what to show and returns the
//! document; `http::invite` serves it. Every value that came from outside (token, username,
//! domain, error text) goes through `escape` (`http::html::esc`). Responses get the headers
//! of `http::html::response`.
//!
//! CSRF: the forms carry no separate CSRF token. The pages set no cookie and the server
//! keeps no browser session, so a cross-site POST has no ambient authority to borrow: it can
//! only do what its author could do directly (on an invite page it needs the secret invite
//! token from the URL; on `/register` it meets the same per-IP throttle). The CSP's
//! `form-action 'self'` and `frame-ancestors 'none'` still keep the forms from being framed.

use crate::http::form::encode as url_encode;
use crate::http::html::esc as escape;

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:36rem;margin:0 auto;\
padding:1rem;line-height:1.5;color:#222;background:#fafafa}h1{font-size:1.5rem}\
.card{background:#fff;border:1px solid #ddd;border-radius:.5rem;padding:1rem;margin:1rem 0}\
.qr{width:14rem;max-width:100%;display:block;margin:.5rem auto}\
.button{display:inline-block;background:#2a6;color:#fff;padding:.6rem 1rem;border-radius:.4rem;\
text-decoration:none;font-weight:600;border:0;font-size:1rem}\
label{display:block;margin:.6rem 0 .2rem}input{font-size:1rem;padding:.5rem;width:100%;\
box-sizing:border-box}.error{background:#fee;border-color:#c66}code{word-break:break-all}\
ul{padding-left:1.2rem}";

fn document(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"referrer\" content=\"no-referrer\">\
         <title>{}</title><style>{STYLE}</style></head><body>{body}</body></html>\n",
        escape(title)
    )
}

/// Apps per platform, as Snikket lists them. `uri` goes to Conversations through the Play
/// Store referrer, so the app picks the invite up after installing (Snikket does the same).
fn client_list(uri: &str) -> String {
    let play = format!(
        "https://play.google.com/store/apps/details?id=eu.siacs.conversations&amp;referrer={}",
        url_encode(uri)
    );
    format!(
        "<ul>\
         <li><b>Android</b>: <a href=\"{play}\">Conversations</a> \
         (also on <a href=\"https://f-droid.org/packages/eu.siacs.conversations/\">F-Droid</a>)</li>\
         <li><b>iPhone, iPad</b>: <a href=\"https://monal-im.org/\">Monal</a> or \
         <a href=\"https://siskin.im/\">Siskin IM</a></li>\
         <li><b>Mac</b>: <a href=\"https://monal-im.org/\">Monal</a></li>\
         <li><b>Windows</b>: <a href=\"https://gajim.org/download/\">Gajim</a></li>\
         <li><b>Linux</b>: <a href=\"https://dino.im/\">Dino</a> or \
         <a href=\"https://gajim.org/download/\">Gajim</a></li>\
         </ul>"
    )
}

/// What the invite page shows.
pub struct InvitePage<'a> {
    pub domain: &'a str,
    /// The account that invites, shown as "alice@example.org invited you".
    pub inviter: Option<&'a str>,
    /// The XEP-0401 URI and its QR code (SVG markup from `qr::svg`, trusted).
    pub uri: &'a str,
    pub qr_svg: &'a str,
    /// Where the form posts.
    pub action: &'a str,
    /// The username the invite is reserved for (the field is then fixed).
    pub username: Option<&'a str>,
}

/// The landing page of an invite link.
pub fn invite(p: &InvitePage<'_>) -> String {
    let domain = escape(p.domain);
    let who = match p.inviter {
        Some(i) => format!("<b>{}</b> invited you", escape(i)),
        None => "You are invited".to_string(),
    };
    let uri = escape(p.uri);
    let body = format!(
        "<h1>{who} to chat on {domain}</h1>\
         <p>{domain} is a chat server for family and friends. It speaks XMPP, so you can use \
         any XMPP app.</p>\
         <div class=\"card\"><h2>1. Install an app</h2>{}</div>\
         <div class=\"card\"><h2>2. Open the invite in the app</h2>\
         <p><a class=\"button\" href=\"{uri}\">Open in the app</a></p>\
         <p>Or scan this code with the app on your phone:</p>{}\
         <p><small><code>{uri}</code></small></p></div>\
         {}",
        client_list(p.uri),
        p.qr_svg,
        register_form(
            p.domain,
            p.action,
            p.username,
            None,
            "Your app does not support invites? Choose a username and password here, then \
             sign in with them in any XMPP app."
        )
    );
    document(&format!("Invitation to {}", p.domain), &body)
}

/// The registration form: on invite pages, on `/register` (open registration), and again
/// with `error` when a submission failed (the username is kept, the password never).
pub fn register_form(
    domain: &str,
    action: &str,
    username: Option<&str>,
    error: Option<&str>,
    intro: &str,
) -> String {
    let err = match error {
        Some(e) => format!("<p class=\"card error\" role=\"alert\">{}</p>", escape(e)),
        None => String::new(),
    };
    let value = username.map(escape).unwrap_or_default();
    format!(
        "<div class=\"card\"><h2>Create your account</h2>{err}<p>{}</p>\
         <form method=\"post\" action=\"{}\">\
         <label for=\"username\">Username</label>\
         <input id=\"username\" name=\"username\" value=\"{value}\" required maxlength=\"64\" \
         autocapitalize=\"none\" autocorrect=\"off\" autocomplete=\"username\" \
         pattern=\"[^@/ ]+\"> <small>@{}</small>\
         <label for=\"password\">Password</label>\
         <input id=\"password\" name=\"password\" type=\"password\" required minlength=\"8\" \
         autocomplete=\"new-password\">\
         <p><button class=\"button\" type=\"submit\">Create account</button></p>\
         </form></div>",
        escape(intro),
        escape(action),
        escape(domain),
    )
}

/// `/register` with open registration.
pub fn open_register(
    domain: &str,
    action: &str,
    username: Option<&str>,
    error: Option<&str>,
) -> String {
    let body = format!(
        "<h1>Join {}</h1>{}",
        escape(domain),
        register_form(
            domain,
            action,
            username,
            error,
            "Choose a username and a password (at least 8 characters)."
        )
    );
    document(&format!("Join {domain}"), &body)
}

/// An invite page after a failed submission: the form again, with the error on top.
pub fn invite_retry(domain: &str, action: &str, username: Option<&str>, error: &str) -> String {
    let body = format!(
        "<h1>Create your account on {}</h1>{}",
        escape(domain),
        register_form(domain, action, username, Some(error), "Please try again.")
    );
    document(&format!("Invitation to {domain}"), &body)
}

/// After registration: the new address, apps, and the login URI with its QR code.
pub fn registered(jid: &str, uri: &str, qr_svg: &str) -> String {
    let body = format!(
        "<h1>Welcome!</h1><div class=\"card\"><p>Your account <b>{}</b> is ready. Sign in \
         with it and your password in an XMPP app:</p>{}\
         <p><a class=\"button\" href=\"{}\">Open in the app</a></p>\
         <p>Or scan this code with the app:</p>{qr_svg}</div>",
        escape(jid),
        client_list(uri),
        escape(uri),
    );
    document("Account created", &body)
}

/// An invite that cannot be used (unknown, expired, used up) or registration that is closed.
pub fn gone(title: &str, text: &str) -> String {
    let body = format!(
        "<h1>{}</h1><p>{}</p><p>Ask the person who invited you for a new invitation.</p>",
        escape(title),
        escape(text)
    );
    document(title, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn outside_values_never_become_markup() {
        let evil = "<script>alert(1)</script>\"onload=\"x";
        let page = invite(&InvitePage {
            domain: evil,
            inviter: Some(evil),
            uri: evil,
            qr_svg: "<svg></svg>",
            action: evil,
            username: Some(evil),
        });
        assert!(!page.contains("<script>"), "{page}");
        assert!(!page.contains("\"onload"), "{page}");
        let retry = invite_retry("d", "/invite/T/register", Some(evil), evil);
        assert!(!retry.contains("<script>") && !retry.contains("\"onload"));
        let done = registered(evil, evil, "");
        assert!(!done.contains("<script>"));
        let g = gone(evil, evil);
        assert!(!g.contains("<script>"));
    }

    #[test]
    fn play_store_referrer_is_encoded() {
        let list = client_list("xmpp:d?register;preauth=T");
        assert!(
            list.contains("referrer=xmpp%3Ad%3Fregister%3Bpreauth%3DT"),
            "{list}"
        );
    }

    #[test]
    fn form_posts_username_and_password() {
        let f = register_form("example.org", "/register", None, None, "hi");
        assert!(f.contains("method=\"post\" action=\"/register\""));
        assert!(f.contains("name=\"username\"") && f.contains("name=\"password\""));
    }
}
