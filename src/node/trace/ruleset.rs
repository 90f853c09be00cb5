//! A namespace's nft ruleset as trace needs it: each chain's hook, and each rule's text
//! and comment by handle (from `list ruleset` with handles shown).

use std::collections::HashMap;

/// (family, table, chain, handle).
type RuleKey = (String, String, String, u64);

#[derive(Debug, Default)]
pub struct Ruleset {
    /// (family, table, chain) → hook of a base chain.
    hooks: HashMap<(String, String, String), String>,
    /// (family, table, chain, handle) → (rule text without its comment, comment).
    rules: HashMap<RuleKey, (String, Option<String>)>,
}

/// Splits `... comment "text"` off a rule, and the counter's running numbers (they say
/// nothing about this packet).
fn split_comment(rule: &str) -> (String, Option<String>) {
    let (text, comment) = match rule.split_once(" comment \"") {
        Some((text, c)) => (text, Some(c.trim_end_matches('"').to_string())),
        None => (rule, None),
    };
    let mut words: Vec<&str> = vec![];
    let mut it = text.split(' ').peekable();
    while let Some(w) = it.next() {
        words.push(w);
        if w == "counter" && it.peek() == Some(&"packets") {
            // packets N bytes M
            for _ in 0..4 {
                it.next();
            }
        }
    }
    (words.join(" "), comment)
}

impl Ruleset {
    pub fn parse(listing: &str) -> Ruleset {
        let mut r = Ruleset::default();
        let (mut family, mut table, mut chain) = (String::new(), String::new(), None::<String>);
        for line in listing.lines() {
            let l = line.trim();
            let (body, handle) = match l.rsplit_once(" # handle ") {
                Some((b, h)) => (b.trim(), h.trim().parse::<u64>().ok()),
                None => (l, None),
            };
            if let Some(t) = body.strip_prefix("table ") {
                let mut w = t.trim_end_matches(" {").split_whitespace();
                family = w.next().unwrap_or_default().to_string();
                table = w.next().unwrap_or_default().to_string();
                chain = None;
            } else if let Some(c) = body.strip_prefix("chain ") {
                chain = Some(c.trim_end_matches(" {").trim().to_string());
            } else if body.starts_with("set ")
                || body.starts_with("map ")
                || body.starts_with("flowtable ")
            {
                chain = None;
            } else if let Some(c) = &chain {
                if let Some(rest) = body.strip_prefix("type ") {
                    if let Some(hook) = rest.split_whitespace().skip_while(|w| *w != "hook").nth(1)
                    {
                        r.hooks.insert(
                            (family.clone(), table.clone(), c.clone()),
                            hook.trim_end_matches(';').to_string(),
                        );
                    }
                } else if let Some(h) = handle {
                    r.rules.insert(
                        (family.clone(), table.clone(), c.clone(), h),
                        split_comment(body),
                    );
                }
            }
        }
        r
    }

    pub fn hook(&self, family: &str, table: &str, chain: &str) -> Option<&str> {
        self.hooks
            .get(&(family.into(), table.into(), chain.into()))
            .map(String::as_str)
    }

    pub fn rule(
        &self,
        family: &str,
        table: &str,
        chain: &str,
        handle: u64,
    ) -> Option<&(String, Option<String>)> {
        self.rules
            .get(&(family.into(), table.into(), chain.into(), handle))
    }
}

#[cfg(test)]
mod tests {
    use super::Ruleset;

    #[test]
    fn hooks_rules_and_comments_by_handle() {
        let l = "table inet knit { # handle 5\n\tset masq4 { # handle 3\n\t\ttype ipv4_addr\n\t\telements = { 10.0.0.0/24 }\n\t}\n\tchain forward { # handle 9\n\t\ttype filter hook forward priority filter; policy accept;\n\t\tct status dnat accept comment \"published ports and services pass network isolation\" # handle 41\n\t}\n\tchain publish { # handle 10\n\t\tdnat ip to ip daddr . meta l4proto . th dport map @pub4 # handle 42\n\t}\n}\ntable ip filter { # handle 6\n\tchain FORWARD { # handle 1\n\t\ttype filter hook forward priority filter; policy drop;\n\t\tcounter packets 0 bytes 0 accept # handle 2\n\t}\n}\n";
        let r = Ruleset::parse(l);
        assert_eq!(r.hook("inet", "knit", "forward"), Some("forward"));
        assert_eq!(r.hook("inet", "knit", "publish"), None);
        assert_eq!(r.hook("ip", "filter", "FORWARD"), Some("forward"));
        let (text, comment) = r.rule("inet", "knit", "forward", 41).unwrap();
        assert_eq!(text, "ct status dnat accept");
        assert_eq!(
            comment.as_deref(),
            Some("published ports and services pass network isolation")
        );
        assert_eq!(r.rule("inet", "knit", "publish", 42).unwrap().1, None);
        assert_eq!(
            r.rule("ip", "filter", "FORWARD", 2).unwrap().0,
            "counter accept"
        );
    }
}
