//! Server-rendered HTML for kith's own pages (the web admin, invitations): escaping and one
//! page layout that reads well on a phone. **Pure**. Every piece of text that did not come
//! from this file goes through `esc`; pages carry no scripts, so the response's CSP forbids
//! them outright.

use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

use super::body::{self, Body};

/// Escapes text for an HTML element body or a double-quoted attribute value.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "\
*{box-sizing:border-box}\
body{font:16px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;color:#1d2430;background:#f5f6f8}\
header{background:#23395d;color:#fff;padding:.6em 1em;display:flex;flex-wrap:wrap;gap:.4em 1em;align-items:center}\
header b{margin-right:auto}header a{color:#fff}\
main{max-width:60em;margin:0 auto;padding:1em}\
h1{font-size:1.4em;margin:.4em 0 .8em}h2{font-size:1.15em;margin:1.4em 0 .5em}\
table{border-collapse:collapse;width:100%;background:#fff}\
th,td{text-align:left;padding:.4em .5em;border-bottom:1px solid #dde1e6;vertical-align:top}\
.scroll{overflow-x:auto}\
form.inline{display:flex;flex-wrap:wrap;gap:.3em;margin:.4em 0}\
form.inline input{flex:1 1 9em;min-width:0}\
summary{cursor:pointer;color:#23395d;font-weight:600}\
input,textarea,select,button{font:inherit;padding:.35em .5em;border:1px solid #b8bfc9;border-radius:4px}\
button{background:#23395d;color:#fff;border-color:#23395d;cursor:pointer}\
button.danger{background:#a4262c;border-color:#a4262c}\
.card{background:#fff;border:1px solid #dde1e6;border-radius:6px;padding:1em;margin:0 0 1em}\
.msg{padding:.6em 1em;border-radius:4px;margin:0 0 1em;background:#e6f4ea}\
.msg.err{background:#fde7e9}\
.bar{background:#dde1e6;border-radius:3px;height:.9em;min-width:8em}\
.bar span{display:block;height:100%;background:#3b6fb6;border-radius:3px}\
.ok{color:#1e7b34}.note{color:#555}.warning{color:#9a6700}.error{color:#a4262c}\
.muted{color:#5b6472;font-size:.9em}\
td,li,p,a,code{overflow-wrap:anywhere}ul.findings{list-style:none;padding:0}\
label{display:block;margin:.5em 0 .2em}\
";

/// A whole page: `title`, the navigation (`nav`: links as (href, text), empty for none), and
/// `content`, which must already be HTML (built with `esc`).
pub fn page(title: &str, nav: &[(&str, &str)], content: &str) -> String {
    let mut links = String::new();
    for (href, text) in nav {
        links.push_str(&format!("<a href=\"{}\">{}</a>", esc(href), esc(text)));
    }
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <meta name=\"referrer\" content=\"no-referrer\">\
         <title>{t}</title><style>{STYLE}</style></head><body>\
         <header><b>{t}</b>{links}</header><main>{content}</main></body></html>",
        t = esc(title)
    )
}

/// An HTML response with headers that keep the page to itself: no scripts at all, no
/// framing, no caching (pages show accounts and sessions), no referrer leaking paths.
pub fn response(status: StatusCode, html: String) -> Response<Body> {
    let mut r = body::response(status, "text/html; charset=utf-8", html);
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src data:; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// A 303 to `location` (after a POST, so a reload does not repeat it).
pub fn see_other(location: &str) -> Response<Body> {
    let mut r = body::status(StatusCode::SEE_OTHER);
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc(r#"<script>"x" & 'y'</script>"#),
            "&lt;script&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/script&gt;"
        );
        assert_eq!(esc("alice@example.org"), "alice@example.org");
    }

    #[test]
    fn page_escapes_title_and_nav() {
        let p = page("<b>", &[("/a?x=\"1\"", "<i>")], "<p>ok</p>");
        assert!(p.contains("<title>&lt;b&gt;</title>"));
        assert!(p.contains("href=\"/a?x=&quot;1&quot;\">&lt;i&gt;</a>"));
        assert!(p.contains("<main><p>ok</p></main>"));
        assert!(!p.contains("<script"));
    }
}
