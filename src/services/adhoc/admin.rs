//! XEP-0133 Service Administration: the admin commands, with the nodes and forms the XEP
//! shows (Gajim and other clients send exactly those field names).

use super::Command;

pub const COMMANDS: &[Command] = &[];
