//! What names, headers, values, hostnames and subjects may look like, as CEL rules for
//! the CRDs. Each rule's message names the field and says what is allowed; the API
//! server puts the field's path in front of it. Why each bound is what it is:
//! `docs/api.md` ("Allowed values") and `docs/design-decisions.md`.

use kube::core::{Message, Rule};

/// An HTTP header name: an RFC 9110 token (`tchar`). Gateway API checks HTTPRoute header
/// matches against the same characters.
pub const HEADER_NAME_PATTERN: &str = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$";
/// The longest header name accepted. Gateway API allows 256; no real header is near it,
/// and the routing table repeats the name in every entry.
pub const MAX_HEADER_NAME: usize = 128;
/// Headers that cannot identify a cohort: hop-by-hop headers, which proxies remove
/// before routing (RFC 9110 section 7.6.1), and `host` and `content-length`, which
/// they rewrite or derive from the request itself.
pub const UNROUTABLE_HEADERS: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];

/// A value sent in a header and matched exactly: a cohort value or the legacy-access
/// value. The syntax of a Kubernetes label value (letters, digits, `-`, `_`, `.`,
/// starting and ending with a letter or digit), so that it is usable unchanged as a
/// header value, an HTTPRoute match, a label value, a Prometheus label value and in a
/// PromQL string, and `status.cohort`'s `key=value,...` stays unambiguous.
pub const VALUE_PATTERN: &str = r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$";
/// The longest cohort value: a label value's limit.
pub const MAX_COHORT_VALUE: usize = 63;
/// The longest legacy-access value: only ever a header value, so room for a token.
pub const MAX_LEGACY_ACCESS_VALUE: usize = 128;

/// A cohort key: a placeholder in queries (`{{team}}`) and a key of the routing table.
pub const COHORT_KEY_PATTERN: &str = r"^[a-z]([a-z0-9_-]*[a-z0-9])?$";
/// The longest cohort key.
pub const MAX_COHORT_KEY: usize = 63;
/// Cohort keys that would shadow, or be shadowed by, a built-in query placeholder
/// (see `analysis::template::wave_values`; `plan` is kept for the plan's name).
pub const RESERVED_COHORT_KEYS: [&str; 3] = ["wave", "namespace", "plan"];

/// The name of a gate, a metric or a freeze window: shown in status, Events and
/// `kubectl wave`, and typed on the command line. Label-value syntax.
pub const NAME_PATTERN: &str = VALUE_PATTERN;

/// An RFC 1123 label: a namespace.
pub const DNS_LABEL_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// An RFC 1035 label: a Service.
pub const SERVICE_NAME_PATTERN: &str = r"^[a-z]([-a-z0-9]*[a-z0-9])?$";
/// An RFC 1123 subdomain: the name of most Kubernetes objects.
pub const DNS_SUBDOMAIN_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// A Gateway API hostname: an RFC 1123 subdomain, optionally behind a `*.` wildcard
/// label (the same pattern Gateway API's CRDs use).
pub const HOSTNAME_PATTERN: &str =
    r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// Groups that every requester of a kind is in: every authenticated user, every
/// anonymous request, every ServiceAccount in the cluster. A subject list naming one
/// lets everybody act.
pub const EVERYONE_GROUPS: [&str; 3] = [
    "system:authenticated",
    "system:unauthenticated",
    "system:serviceaccounts",
];
/// The user of every request that carries no credentials.
pub const ANONYMOUS_USER: &str = "system:anonymous";

/// `s` as a CEL string literal.
pub fn cel_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `items` as a CEL list of strings.
pub fn cel_list(items: &[&str]) -> String {
    let items: Vec<String> = items.iter().map(|s| cel_str(s)).collect();
    format!("[{}]", items.join(", "))
}

fn rule(expression: String, message: String) -> Rule {
    Rule::new(expression).message(Message::Message(message))
}

/// A string field: an HTTP token of at most [`MAX_HEADER_NAME`] characters.
pub fn header_name(field: &str) -> Rule {
    rule(
        format!(
            "self.size() <= {MAX_HEADER_NAME} && self.matches({})",
            cel_str(HEADER_NAME_PATTERN)
        ),
        format!(
            "{field} must be an HTTP header name (an RFC 9110 token) of at most \
             {MAX_HEADER_NAME} characters: letters, digits and !#$%&'*+-.^_`|~, no spaces, \
             colons or other separators, for example x-crm-team"
        ),
    )
}

/// A string field: not a header proxies remove or rewrite.
pub fn routable_header(field: &str) -> Rule {
    rule(
        format!("!(self.lowerAscii() in {})", cel_list(&UNROUTABLE_HEADERS)),
        format!(
            "{field} must not be one of {}: proxies remove or rewrite these headers before \
             routing, so no request could be matched by them; use a header of your own, \
             for example x-crm-team",
            UNROUTABLE_HEADERS.join(", ")
        ),
    )
}

/// The CEL condition that the string `value` is a header value of at most `max`.
fn value_ok(value: &str, max: usize) -> String {
    format!(
        "({value}.size() <= {max} && {value}.matches({}))",
        cel_str(VALUE_PATTERN)
    )
}

/// What [`VALUE_PATTERN`] allows, for messages.
fn value_allowed(max: usize) -> String {
    format!(
        "1-{max} letters, digits, '-', '_' or '.', starting and ending with a letter or \
         digit (no spaces, quotes or control characters)"
    )
}

/// A string field: a header value of at most `max` characters.
pub fn header_value(field: &str, max: usize) -> Rule {
    rule(
        value_ok("self", max),
        format!(
            "{field} must be {}: it is sent as a header value and matched exactly",
            value_allowed(max)
        ),
    )
}

/// A map of cohort key to value (a wave's cohort): every non-empty value is a header
/// value (the empty ones have a rule of their own).
pub fn cohort_values(field: &str) -> Rule {
    let bad = format!(
        "self[k] != '' && !{}",
        value_ok("self[k]", MAX_COHORT_VALUE)
    );
    Rule::new(format!("!self.exists(k, {bad})")).message(Message::Expression(format!(
        "{} + self.filter(k, {bad})[0] + {}",
        cel_str(&format!("{field}.")),
        cel_str(&format!(
            " must be {}: cohort values are sent as header values, matched exactly, \
             and used as label values",
            value_allowed(MAX_COHORT_VALUE)
        ))
    )))
}

/// A map keyed by cohort key: every key is valid.
pub fn cohort_key_names(field: &str) -> Rule {
    let bad = format!(
        "!(k.size() <= {MAX_COHORT_KEY} && k.matches({}))",
        cel_str(COHORT_KEY_PATTERN)
    );
    Rule::new(format!("!self.exists(k, {bad})")).message(Message::Expression(format!(
        "{} + self.filter(k, {bad})[0] + {}",
        cel_str(&format!("{field}: cohort key ")),
        cel_str(&format!(
            " is not allowed: a cohort key must be 1-{MAX_COHORT_KEY} lowercase letters, \
             digits, '-' or '_', starting with a letter and ending with a letter or digit, \
             for example team or cost_center"
        ))
    )))
}

/// A map keyed by cohort key: no key is reserved.
pub fn cohort_keys_not_reserved(field: &str) -> Rule {
    let reserved = cel_list(&RESERVED_COHORT_KEYS);
    Rule::new(format!("!self.exists(k, k in {reserved})")).message(Message::Expression(format!(
        "{} + self.filter(k, k in {reserved})[0] + {}",
        cel_str(&format!("{field}: cohort key ")),
        cel_str(&format!(
            " is reserved: {} are built-in query placeholders ({{{{wave}}}}, \
             {{{{namespace}}}}, and plan for the plan's name); name the key after what it \
             distinguishes, for example team or region",
            RESERVED_COHORT_KEYS.join(", ")
        ))
    )))
}

/// A string field matching `pattern`, of at most `max` characters; `allowed` says what
/// that is, for people.
pub fn matches(field: &str, pattern: &str, max: usize, allowed: &str) -> Rule {
    rule(
        format!("self.size() <= {max} && self.matches({})", cel_str(pattern)),
        format!("{field} must be {allowed}"),
    )
}

/// The name of a gate, a metric or a freeze window.
pub fn simple_name(field: &str) -> Rule {
    matches(
        field,
        NAME_PATTERN,
        63,
        "1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit, \
         for example critical-defects-zero",
    )
}

/// The name of a Kubernetes object that names are DNS subdomains of, at most `max`
/// characters (63 where the name is also used as a label value).
pub fn object_name(field: &str, max: usize) -> Rule {
    matches(
        field,
        DNS_SUBDOMAIN_PATTERN,
        max,
        &format!(
            "the name of an object: 1-{max} lowercase letters, digits, '-' or '.', \
             starting and ending with a letter or digit"
        ),
    )
}

/// A list of strings, each the name of an object (see [`object_name`]).
pub fn object_names(field: &str, max: usize) -> Rule {
    rule(
        format!(
            "self.all(n, n.size() <= {max} && n.matches({}))",
            cel_str(DNS_SUBDOMAIN_PATTERN)
        ),
        format!(
            "{field} must name objects: each 1-{max} lowercase letters, digits, '-' or '.', \
             starting and ending with a letter or digit"
        ),
    )
}

/// A CEL condition: the string `s` names a user or group that can be matched: not
/// empty, no control characters, no spaces at either end.
fn subject_ok(s: &str) -> String {
    format!(
        "{s}.matches({})",
        cel_str(r"^[^\s\x00-\x1f\x7f]([^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f])?$")
    )
}

/// The rules of a list of users and groups, which `Subjects` carries.
pub fn subjects() -> [Rule; 6] {
    let everyone = cel_list(&EVERYONE_GROUPS);
    [
        rule(
            "(has(self.users) && self.users.size() > 0) || \
             (has(self.groups) && self.groups.size() > 0)"
                .into(),
            "must name at least one user or group: nobody could satisfy an empty list \
             (leave the field out to use its default)"
                .into(),
        ),
        rule(
            format!("!has(self.groups) || !self.groups.exists(g, g in {everyone})"),
            format!(
                "groups must not name {}: every user, every anonymous request or every \
                 ServiceAccount is in them, so anybody could act; name the group of the \
                 people who may, for example release-managers",
                EVERYONE_GROUPS.join(", ")
            ),
        )
        .field_path(".groups"),
        rule(
            format!(
                "!has(self.users) || !self.users.exists(u, u == {})",
                cel_str(ANONYMOUS_USER)
            ),
            format!(
                "users must not name {ANONYMOUS_USER}: it is whoever sends no credentials; \
                 name the people who may act"
            ),
        )
        .field_path(".users"),
        rule(
            "(!has(self.users) || !self.users.exists(s, s.contains('*'))) && \
             (!has(self.groups) || !self.groups.exists(s, s.contains('*')))"
                .into(),
            "users and groups are matched exactly, so a wildcard (*) would match nobody; \
             name each user or group"
                .into(),
        ),
        rule(
            format!("!has(self.users) || self.users.all(s, {})", subject_ok("s")),
            "each user must be a name exactly as the API server reports it (kubectl auth \
             whoami): not empty, no control characters, no spaces at either end"
                .into(),
        )
        .field_path(".users"),
        rule(
            format!(
                "!has(self.groups) || self.groups.all(s, {})",
                subject_ok("s")
            ),
            "each group must be a name exactly as the API server reports it (kubectl auth \
             whoami): not empty, no control characters, no spaces at either end"
                .into(),
        )
        .field_path(".groups"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn re(pattern: &str) -> regex_lite::Regex {
        regex_lite::Regex::new(pattern).unwrap()
    }

    #[test]
    fn header_names_are_tokens() {
        let header = re(HEADER_NAME_PATTERN);
        for good in ["x-crm-team", "X-Team", "a", "x_b.c~d|e`f'g*h+i#j$k%l&m!n^o"] {
            assert!(header.is_match(good), "{good}");
        }
        for bad in [
            "x team",
            "x:team",
            ":authority",
            "x\"t",
            "x(t)",
            "x/t",
            "",
            "é",
            "x\nt",
        ] {
            assert!(!header.is_match(bad), "{bad:?}");
        }
    }

    #[test]
    fn values_are_label_values() {
        let value = re(VALUE_PATTERN);
        for good in ["support", "EMEA", "us-east-1", "a", "v1.2_x"] {
            assert!(value.is_match(good), "{good}");
        }
        for bad in [
            "", "-a", "a-", "a b", "a\"b", "a\nb", "a\\b", "a,b", "a=b", "é", "a\u{7f}",
        ] {
            assert!(!value.is_match(bad), "{bad:?}");
        }
    }

    #[test]
    fn hostnames_follow_gateway_api() {
        let host = re(HOSTNAME_PATTERN);
        for good in ["crm.example.com", "*.example.com", "localhost", "a-b.c"] {
            assert!(host.is_match(good), "{good}");
        }
        for bad in [
            "*",
            "*.",
            "a.*.com",
            "Crm.example.com",
            "crm.example.com.",
            "-a.com",
            "a_b.com",
            "a..b",
            "*example.com",
        ] {
            assert!(!host.is_match(bad), "{bad}");
        }
    }

    #[test]
    fn cel_strings_escape_quotes_and_backslashes() {
        assert_eq!(cel_str(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(cel_list(&["a", "b"]), r#"["a", "b"]"#);
    }
}
