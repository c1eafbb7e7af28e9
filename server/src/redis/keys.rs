//! Key names. Each session's, each channel's and each name's keys share a
//! hash tag (`{s:<id>}`, `{c:<channel>}`, `{n:<name>}`), so on a Redis
//! Cluster they live in one slot and one script can touch them together.

/// Every key name of one store, from its prefix `P` (which holds no `{` or
/// `}`, so the tag is always the one this module writes).
#[derive(Clone, Debug)]
pub(super) struct Keys {
    prefix: String,
}

impl Keys {
    pub(super) fn new(prefix: String) -> Self {
        Keys { prefix }
    }

    pub(super) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `P{s:<id>}`: the session hash; its other keys add `:subs` (channel
    /// to cursor), `:in` (the inbox) and `:d` (direct messages not yet
    /// numbered).
    pub(super) fn session(&self, id: &str) -> String {
        format!("{}{{s:{id}}}", self.prefix)
    }

    pub(super) fn subs(&self, id: &str) -> String {
        format!("{}:subs", self.session(id))
    }

    pub(super) fn inbox(&self, id: &str) -> String {
        format!("{}:in", self.session(id))
    }

    /// `P{c:<channel>}`: the channel hash (its seq, the last entry's ID and
    /// time); its log is `:log`, pending appends `:pub`.
    pub(super) fn channel(&self, channel: &str) -> String {
        format!("{}{{c:{channel}}}", self.prefix)
    }

    pub(super) fn log(&self, channel: &str) -> String {
        format!("{}:log", self.channel(channel))
    }

    /// `P{n:<name>}`: the session holding a name.
    pub(super) fn name(&self, name: &str) -> String {
        format!("{}{{n:{name}}}", self.prefix)
    }

    /// `Pnotices`: the pub/sub channel every node listens to.
    pub(super) fn notices(&self) -> String {
        format!("{}notices", self.prefix)
    }

    /// `Pstats`: counters (`dropped`).
    pub(super) fn stats(&self) -> String {
        format!("{}stats", self.prefix)
    }

    /// `Pnode:<id>`: a node's heartbeat.
    pub(super) fn node(&self, node: &str) -> String {
        format!("{}node:{node}", self.prefix)
    }

    /// `Psid`: the session id counter.
    pub(super) fn sid(&self) -> String {
        format!("{}sid", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sessions_and_a_channels_keys_share_their_tag() {
        let k = Keys::new("p:".into());
        assert_eq!(k.session("r1-2"), "p:{s:r1-2}");
        assert_eq!(k.inbox("r1-2"), "p:{s:r1-2}:in");
        assert_eq!(k.log("news}x"), "p:{c:news}x}:log");
        assert_eq!(k.name("alice"), "p:{n:alice}");
    }
}
