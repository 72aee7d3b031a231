//! A room's configuration and its XEP-0045 §10.2 `muc#roomconfig` form: rendered for an
//! owner's `get`, parsed from a `submit`. Also the stored form of the configuration (an
//! element, so the store keeps opaque bytes and new fields need no migration).

use super::NS_ROOMCONFIG;
use crate::stanza::ns;
use crate::xml::Element;

/// Who may see occupants' real JIDs (`muc#roomconfig_whois`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Whois {
    Moderators,
    Anyone,
}

/// Who may send private messages to occupants (`muc#roomconfig_allowpm`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllowPm {
    Anyone,
    Participants,
    Moderators,
    Nobody,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomConfig {
    pub name: String,
    pub description: String,
    pub persistent: bool,
    pub public: bool,
    pub members_only: bool,
    pub moderated: bool,
    /// The room password; `None` when the room has none.
    pub password: Option<String>,
    pub whois: Whois,
    pub allow_pm: AllowPm,
    /// Participants (not only moderators) may change the subject.
    pub change_subject: bool,
    /// Occupants (not only admins) may invite; in a members-only room that makes members.
    pub allow_invites: bool,
    /// 0: no limit.
    pub max_users: usize,
    /// Messages kept for history on join.
    pub history_length: usize,
    /// Messages are archived (XEP-0313 on the room).
    pub archiving: bool,
}

impl RoomConfig {
    /// A new room's configuration: Prosody's defaults (open, public, semi-anonymous,
    /// temporary), with archiving on and `history_length` from the service's config.
    pub fn new(history_length: usize) -> RoomConfig {
        RoomConfig {
            name: String::new(),
            description: String::new(),
            persistent: false,
            public: true,
            members_only: false,
            moderated: false,
            password: None,
            whois: Whois::Moderators,
            allow_pm: AllowPm::Anyone,
            change_subject: false,
            allow_invites: false,
            max_users: 0,
            history_length,
            archiving: true,
        }
    }

    /// The form an owner fills in (XEP-0045 §10.2, example 163).
    pub fn form(&self, max_history: usize) -> Element {
        let mut x = Element::new("x", ns::DATA_FORM).with_attr("type", "form");
        x.push_child(Element::new("title", ns::DATA_FORM).with_text("Room configuration"));
        x.push_child(field("FORM_TYPE", "hidden", None, &[NS_ROOMCONFIG]));
        let b = |v: bool| if v { "1" } else { "0" };
        let text = |var: &str, label: &str, v: &str| field(var, "text-single", Some(label), &[v]);
        let boolean = |var: &str, label: &str, v: bool| field(var, "boolean", Some(label), &[b(v)]);
        x.push_child(text("muc#roomconfig_roomname", "Name", &self.name));
        x.push_child(text(
            "muc#roomconfig_roomdesc",
            "Description",
            &self.description,
        ));
        x.push_child(boolean(
            "muc#roomconfig_persistentroom",
            "Persistent (kept when empty)",
            self.persistent,
        ));
        x.push_child(boolean(
            "muc#roomconfig_publicroom",
            "Listed in the room directory",
            self.public,
        ));
        x.push_child(boolean(
            "muc#roomconfig_membersonly",
            "Only members may join",
            self.members_only,
        ));
        x.push_child(boolean(
            "muc#roomconfig_moderatedroom",
            "Moderated (only participants speak)",
            self.moderated,
        ));
        x.push_child(boolean(
            "muc#roomconfig_passwordprotectedroom",
            "Password protected",
            self.password.is_some(),
        ));
        x.push_child(field(
            "muc#roomconfig_roomsecret",
            "text-private",
            Some("Password"),
            &[self.password.as_deref().unwrap_or("")],
        ));
        let mut whois = field(
            "muc#roomconfig_whois",
            "list-single",
            Some("Who may see real addresses"),
            &[match self.whois {
                Whois::Moderators => "moderators",
                Whois::Anyone => "anyone",
            }],
        );
        options(
            &mut whois,
            &[("Moderators", "moderators"), ("Anyone", "anyone")],
        );
        x.push_child(whois);
        let mut pm = field(
            "muc#roomconfig_allowpm",
            "list-single",
            Some("Who may send private messages"),
            &[match self.allow_pm {
                AllowPm::Anyone => "anyone",
                AllowPm::Participants => "participants",
                AllowPm::Moderators => "moderators",
                AllowPm::Nobody => "none",
            }],
        );
        options(
            &mut pm,
            &[
                ("Anyone", "anyone"),
                ("Participants", "participants"),
                ("Moderators", "moderators"),
                ("Nobody", "none"),
            ],
        );
        x.push_child(pm);
        x.push_child(boolean(
            "muc#roomconfig_changesubject",
            "Participants may change the subject",
            self.change_subject,
        ));
        x.push_child(boolean(
            "muc#roomconfig_allowinvites",
            "Occupants may invite",
            self.allow_invites,
        ));
        x.push_child(text(
            "muc#roomconfig_maxusers",
            "Most occupants (0: no limit)",
            &self.max_users.to_string(),
        ));
        x.push_child(text(
            "muc#roomconfig_historylength",
            &format!("Messages sent to new occupants (at most {max_history})"),
            &self.history_length.to_string(),
        ));
        x.push_child(boolean(
            "muc#roomconfig_enablearchiving",
            "Archive messages",
            self.archiving,
        ));
        x
    }

    /// Applies a submitted form: fields present replace values, absent ones stay (XEP-0045
    /// allows partial submissions; Gajim sends every field, some bots only what changed).
    pub fn apply_form(&mut self, form: &Element, max_history: usize) -> Result<(), &'static str> {
        let mut next = self.clone();
        let mut password_protected = None;
        for f in form.children().filter(|c| c.is("field", ns::DATA_FORM)) {
            let Some(var) = f.attr("var") else { continue };
            let values: Vec<String> = f
                .children()
                .filter(|v| v.is("value", ns::DATA_FORM))
                .map(Element::text)
                .collect();
            let v = values.first().map(String::as_str).unwrap_or("");
            let boolean = || match v {
                "1" | "true" => Ok(true),
                "0" | "false" | "" => Ok(false),
                _ => Err("a boolean field holds neither 0 nor 1"),
            };
            match var {
                "FORM_TYPE" if v != NS_ROOMCONFIG => return Err("not a room configuration form"),
                "muc#roomconfig_roomname" => next.name = v.to_string(),
                "muc#roomconfig_roomdesc" => next.description = v.to_string(),
                "muc#roomconfig_persistentroom" => next.persistent = boolean()?,
                "muc#roomconfig_publicroom" => next.public = boolean()?,
                "muc#roomconfig_membersonly" => next.members_only = boolean()?,
                "muc#roomconfig_moderatedroom" => next.moderated = boolean()?,
                "muc#roomconfig_passwordprotectedroom" => password_protected = Some(boolean()?),
                "muc#roomconfig_roomsecret" => {
                    next.password = (!v.is_empty()).then(|| v.to_string())
                }
                "muc#roomconfig_whois" => {
                    next.whois = match v {
                        "moderators" => Whois::Moderators,
                        "anyone" => Whois::Anyone,
                        _ => return Err("whois is 'moderators' or 'anyone'"),
                    }
                }
                "muc#roomconfig_allowpm" => {
                    next.allow_pm = match v {
                        "anyone" => AllowPm::Anyone,
                        "participants" => AllowPm::Participants,
                        "moderators" => AllowPm::Moderators,
                        "none" => AllowPm::Nobody,
                        _ => return Err("allowpm is anyone, participants, moderators or none"),
                    }
                }
                "muc#roomconfig_changesubject" => next.change_subject = boolean()?,
                "muc#roomconfig_allowinvites" => next.allow_invites = boolean()?,
                "muc#roomconfig_maxusers" => {
                    next.max_users = match v {
                        "" | "none" => 0,
                        n => n.parse().map_err(|_| "maxusers is not a number")?,
                    }
                }
                "muc#roomconfig_historylength" => {
                    let n: usize = v.parse().map_err(|_| "historylength is not a number")?;
                    next.history_length = n.min(max_history);
                }
                "muc#roomconfig_enablearchiving" | "mam" => next.archiving = boolean()?,
                _ => {}
            }
        }
        if password_protected == Some(false) {
            next.password = None;
        } else if password_protected == Some(true) && next.password.is_none() {
            return Err("a password-protected room needs a password");
        }
        *self = next;
        Ok(())
    }

    /// The stored form: every field as an attribute.
    pub fn to_element(&self) -> Element {
        let b = |v: bool| if v { "1" } else { "0" };
        let mut el = Element::new("config", NS_ROOMCONFIG)
            .with_attr("name", self.name.as_str())
            .with_attr("description", self.description.as_str())
            .with_attr("persistent", b(self.persistent))
            .with_attr("public", b(self.public))
            .with_attr("members_only", b(self.members_only))
            .with_attr("moderated", b(self.moderated))
            .with_attr("whois_anyone", b(self.whois == Whois::Anyone))
            .with_attr(
                "allow_pm",
                match self.allow_pm {
                    AllowPm::Anyone => "anyone",
                    AllowPm::Participants => "participants",
                    AllowPm::Moderators => "moderators",
                    AllowPm::Nobody => "none",
                },
            )
            .with_attr("change_subject", b(self.change_subject))
            .with_attr("allow_invites", b(self.allow_invites))
            .with_attr("max_users", self.max_users.to_string())
            .with_attr("history_length", self.history_length.to_string())
            .with_attr("archiving", b(self.archiving));
        if let Some(p) = &self.password {
            el.set_attr("password", p.as_str());
        }
        el
    }

    /// Reads the stored form; missing attributes keep `defaults`' values.
    pub fn from_element(el: &Element, defaults: RoomConfig) -> RoomConfig {
        let mut c = defaults;
        let b = |k: &str, d: bool| el.attr(k).map_or(d, |v| v == "1");
        let n = |k: &str, d: usize| el.attr(k).and_then(|v| v.parse().ok()).unwrap_or(d);
        c.name = el.attr("name").unwrap_or_default().to_string();
        c.description = el.attr("description").unwrap_or_default().to_string();
        c.persistent = b("persistent", c.persistent);
        c.public = b("public", c.public);
        c.members_only = b("members_only", c.members_only);
        c.moderated = b("moderated", c.moderated);
        c.password = el.attr("password").map(str::to_string);
        c.whois = if b("whois_anyone", false) {
            Whois::Anyone
        } else {
            Whois::Moderators
        };
        c.allow_pm = match el.attr("allow_pm") {
            Some("participants") => AllowPm::Participants,
            Some("moderators") => AllowPm::Moderators,
            Some("none") => AllowPm::Nobody,
            _ => AllowPm::Anyone,
        };
        c.change_subject = b("change_subject", c.change_subject);
        c.allow_invites = b("allow_invites", c.allow_invites);
        c.max_users = n("max_users", c.max_users);
        c.history_length = n("history_length", c.history_length);
        c.archiving = b("archiving", c.archiving);
        c
    }
}

fn field(var: &str, kind: &str, label: Option<&str>, values: &[&str]) -> Element {
    let mut f = Element::new("field", ns::DATA_FORM)
        .with_attr("var", var)
        .with_attr("type", kind);
    if let Some(l) = label {
        f.set_attr("label", l);
    }
    for v in values {
        f.push_child(Element::new("value", ns::DATA_FORM).with_text(*v));
    }
    f
}

fn options(f: &mut Element, opts: &[(&str, &str)]) {
    for (label, value) in opts {
        f.push_child(
            Element::new("option", ns::DATA_FORM)
                .with_attr("label", *label)
                .with_child(Element::new("value", ns::DATA_FORM).with_text(*value)),
        );
    }
}

/// A result form field (disco#info's `muc#roominfo`, voice requests).
pub fn result_field(var: &str, values: &[&str]) -> Element {
    let mut f = Element::new("field", ns::DATA_FORM).with_attr("var", var);
    for v in values {
        f.push_child(Element::new("value", ns::DATA_FORM).with_text(*v));
    }
    f
}

/// The first value of field `var` in a data form.
pub fn form_value(form: &Element, var: &str) -> Option<String> {
    form.children()
        .find(|f| f.is("field", ns::DATA_FORM) && f.attr("var") == Some(var))
        .and_then(|f| f.get_child("value", ns::DATA_FORM))
        .map(Element::text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn submit(fields: &[(&str, &str)]) -> Element {
        let mut x = Element::new("x", ns::DATA_FORM).with_attr("type", "submit");
        x.push_child(result_field("FORM_TYPE", &[NS_ROOMCONFIG]));
        for (k, v) in fields {
            x.push_child(result_field(k, &[v]));
        }
        x
    }

    #[test]
    fn rendered_form_submitted_back_changes_nothing() {
        let mut c = RoomConfig::new(20);
        c.password = Some("s3cret".into());
        c.members_only = true;
        let mut form = c.form(50);
        form.set_attr("type", "submit");
        let mut again = c.clone();
        again.apply_form(&form, 50).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn fields_gajim_and_conversations_send() {
        let mut c = RoomConfig::new(20);
        c.apply_form(
            &submit(&[
                ("muc#roomconfig_roomname", "Family"),
                ("muc#roomconfig_persistentroom", "true"),
                ("muc#roomconfig_membersonly", "1"),
                ("muc#roomconfig_whois", "anyone"),
                ("muc#roomconfig_publicroom", "0"),
                ("muc#roomconfig_historylength", "500"),
                ("muc#roomconfig_allowpm", "none"),
            ]),
            50,
        )
        .unwrap();
        assert_eq!(c.name, "Family");
        assert!(c.persistent && c.members_only && !c.public);
        assert_eq!(c.whois, Whois::Anyone);
        assert_eq!(c.allow_pm, AllowPm::Nobody);
        assert_eq!(c.history_length, 50, "capped at the service's maximum");
    }

    #[test]
    fn bad_submissions_change_nothing() {
        let mut c = RoomConfig::new(20);
        let before = c.clone();
        for fields in [
            &[("muc#roomconfig_whois", "everyone")][..],
            &[("muc#roomconfig_persistentroom", "yes")][..],
            &[("muc#roomconfig_passwordprotectedroom", "1")][..],
            &[
                ("muc#roomconfig_roomname", "x"),
                ("muc#roomconfig_maxusers", "-1"),
            ][..],
        ] {
            assert!(c.apply_form(&submit(fields), 50).is_err(), "{fields:?}");
            assert_eq!(c, before);
        }
        let mut other = Element::new("x", ns::DATA_FORM);
        other.push_child(result_field("FORM_TYPE", &["urn:example"]));
        assert!(c.apply_form(&other, 50).is_err());
    }

    #[test]
    fn password_on_and_off() {
        let mut c = RoomConfig::new(20);
        c.apply_form(
            &submit(&[
                ("muc#roomconfig_passwordprotectedroom", "1"),
                ("muc#roomconfig_roomsecret", "pw"),
            ]),
            50,
        )
        .unwrap();
        assert_eq!(c.password.as_deref(), Some("pw"));
        c.apply_form(
            &submit(&[("muc#roomconfig_passwordprotectedroom", "0")]),
            50,
        )
        .unwrap();
        assert_eq!(c.password, None);
    }

    #[test]
    fn stored_form_round_trips() {
        let mut c = RoomConfig::new(7);
        c.name = "N".into();
        c.password = Some("p".into());
        c.allow_pm = AllowPm::Moderators;
        c.whois = Whois::Anyone;
        c.persistent = true;
        assert_eq!(
            RoomConfig::from_element(&c.to_element(), RoomConfig::new(1)),
            c
        );
    }
}
