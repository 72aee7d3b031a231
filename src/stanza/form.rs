//! XEP-0004 Data Forms: building the forms the server shows (ad-hoc commands) and reading the
//! values a client submits. **Pure.**
//!
//! Only what a server needs: a form is built field by field and becomes an `<x/>` element; a
//! submitted `<x type='submit'/>` becomes `Values` (var → values, in document order).

use std::collections::BTreeMap;

use crate::stanza::ns;
use crate::xml::Element;

/// XEP-0004 §3.3 field types the server's forms use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldType {
    Hidden,
    Fixed,
    TextSingle,
    TextPrivate,
    TextMulti,
    JidSingle,
    JidMulti,
    ListSingle,
    ListMulti,
    Boolean,
}

impl FieldType {
    pub fn as_str(self) -> &'static str {
        match self {
            FieldType::Hidden => "hidden",
            FieldType::Fixed => "fixed",
            FieldType::TextSingle => "text-single",
            FieldType::TextPrivate => "text-private",
            FieldType::TextMulti => "text-multi",
            FieldType::JidSingle => "jid-single",
            FieldType::JidMulti => "jid-multi",
            FieldType::ListSingle => "list-single",
            FieldType::ListMulti => "list-multi",
            FieldType::Boolean => "boolean",
        }
    }
}

/// A form being built: `Form::new("form").title(..).field(..)...into_element()`.
#[derive(Clone, Debug)]
pub struct Form {
    el: Element,
}

/// One field; `Field::new(var, type)` then the optional parts.
#[derive(Clone, Debug)]
pub struct Field {
    el: Element,
}

impl Field {
    pub fn new(var: &str, kind: FieldType) -> Field {
        Field {
            el: Element::new("field", ns::DATA_FORM)
                .with_attr("var", var)
                .with_attr("type", kind.as_str()),
        }
    }

    /// The `FORM_TYPE` hidden field (XEP-0068) every XEP-0133 form carries.
    pub fn form_type(uri: &str) -> Field {
        Field::new("FORM_TYPE", FieldType::Hidden).value(uri)
    }

    pub fn label(mut self, label: &str) -> Field {
        self.el.set_attr("label", label);
        self
    }

    pub fn required(mut self) -> Field {
        self.el.push_child(Element::new("required", ns::DATA_FORM));
        self
    }

    pub fn value(mut self, v: impl Into<String>) -> Field {
        self.el
            .push_child(Element::new("value", ns::DATA_FORM).with_text(v));
        self
    }

    /// Each line of `text` as its own `<value/>` (XEP-0004 §3.3 text-multi).
    pub fn lines(mut self, text: &str) -> Field {
        for line in text.split('\n') {
            self = self.value(line);
        }
        self
    }

    pub fn option(mut self, label: &str, value: &str) -> Field {
        self.el.push_child(
            Element::new("option", ns::DATA_FORM)
                .with_attr("label", label)
                .with_child(Element::new("value", ns::DATA_FORM).with_text(value)),
        );
        self
    }
}

impl Form {
    /// `kind` is the form type: `form` (asks), `result` (tells).
    pub fn new(kind: &str) -> Form {
        Form {
            el: Element::new("x", ns::DATA_FORM).with_attr("type", kind),
        }
    }

    pub fn title(mut self, title: &str) -> Form {
        self.el
            .push_child(Element::new("title", ns::DATA_FORM).with_text(title));
        self
    }

    pub fn instructions(mut self, text: &str) -> Form {
        self.el
            .push_child(Element::new("instructions", ns::DATA_FORM).with_text(text));
        self
    }

    pub fn field(mut self, f: Field) -> Form {
        self.el.push_child(f.el);
        self
    }

    pub fn into_element(self) -> Element {
        self.el
    }
}

/// Submitted values: var → its values (a field submitted twice keeps the later one).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Values(BTreeMap<String, Vec<String>>);

impl Values {
    /// The values of a submitted form (`type='submit'`); any other form type is `None`
    /// (XEP-0004 §3.1: a `cancel` or `result` carries nothing to act on).
    pub fn from_submit(x: &Element) -> Option<Values> {
        if !x.is("x", ns::DATA_FORM) || x.attr("type") != Some("submit") {
            return None;
        }
        let mut map = BTreeMap::new();
        for f in x.children().filter(|c| c.is("field", ns::DATA_FORM)) {
            let Some(var) = f.attr("var") else { continue };
            let vals = f
                .children()
                .filter(|c| c.is("value", ns::DATA_FORM))
                .map(|v| v.text())
                .collect();
            map.insert(var.to_string(), vals);
        }
        Some(Values(map))
    }

    /// Adds (replacing) the fields of `other`: a later stage's answers extend the earlier ones.
    pub fn merge(&mut self, other: Values) {
        self.0.extend(other.0);
    }

    pub fn insert(&mut self, var: &str, values: Vec<String>) {
        self.0.insert(var.to_string(), values);
    }

    /// All values of a field (empty when absent).
    pub fn all(&self, var: &str) -> &[String] {
        self.0.get(var).map(|v| v.as_slice()).unwrap_or(&[])
    }

    /// The first value, trimmed; `None` when absent or blank.
    pub fn one(&self, var: &str) -> Option<&str> {
        self.all(var)
            .first()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
    }

    /// A text-multi field's values joined back into lines.
    pub fn text(&self, var: &str) -> String {
        self.all(var).join("\n")
    }

    /// XEP-0004 §3.3 boolean: `1`/`true` are true; absent is `default`.
    pub fn boolean(&self, var: &str, default: bool) -> bool {
        match self.one(var) {
            Some(v) => matches!(v, "1" | "true"),
            None => default,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_form_has_fields_in_order() {
        let x = Form::new("form")
            .title("Adding a User")
            .field(Field::form_type("http://jabber.org/protocol/admin"))
            .field(
                Field::new("accountjid", FieldType::JidSingle)
                    .label("The Jabber ID for the account to be added")
                    .required(),
            )
            .into_element();
        let s = x.to_string();
        assert!(s.starts_with("<x xmlns='jabber:x:data' type='form'><title>Adding a User</title>"));
        assert!(s.contains(
            "<field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/admin</value></field>"
        ));
        assert!(s.contains("type='jid-single' label='The Jabber ID for the account to be added'><required/></field>"));
    }

    #[test]
    fn submit_values_are_read() {
        let x = Element::parse(
            "<x xmlns='jabber:x:data' type='submit'>\
             <field var='accountjid'><value> a@b </value></field>\
             <field var='body' type='text-multi'><value>one</value><value>two</value></field>\
             <field var='flag'><value>true</value></field>\
             <field><value>no var</value></field></x>",
        )
        .unwrap();
        let v = Values::from_submit(&x).unwrap();
        assert_eq!(v.one("accountjid"), Some("a@b"));
        assert_eq!(v.text("body"), "one\ntwo");
        assert!(v.boolean("flag", false));
        assert!(!v.boolean("missing", false));
        assert_eq!(v.one("missing"), None);
    }

    #[test]
    fn only_submit_forms_carry_values() {
        let x = Element::parse("<x xmlns='jabber:x:data' type='cancel'/>").unwrap();
        assert!(Values::from_submit(&x).is_none());
        let x = Element::parse("<x xmlns='urn:other' type='submit'/>").unwrap();
        assert!(Values::from_submit(&x).is_none());
    }

    #[test]
    fn later_stage_replaces_a_field() {
        let mut a = Values::default();
        a.insert("x", vec!["1".into()]);
        a.insert("y", vec!["2".into()]);
        let mut b = Values::default();
        b.insert("x", vec!["3".into()]);
        a.merge(b);
        assert_eq!(a.one("x"), Some("3"));
        assert_eq!(a.one("y"), Some("2"));
    }
}
