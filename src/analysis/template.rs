//! Query templates: `{{team}}`, `{{region}}` (any cohort key), `{{wave}}` and
//! `{{namespace}}` are replaced by the wave's values, escaped for the PromQL string
//! literal they stand in, so that no cohort value can change the query's meaning.
//!
//! A placeholder is only allowed inside a quoted string (`team="{{team}}"`): outside
//! one, no escaping could make an arbitrary value safe, so the template is refused.

use std::collections::BTreeMap;

/// Why a template cannot be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `{{name}}` names nothing the wave has.
    #[error("unknown placeholder {{{{{name}}}}}; known: {known}")]
    UnknownPlaceholder { name: String, known: String },
    /// A placeholder outside a string literal.
    #[error(
        "placeholder {{{{{name}}}}} must be inside a quoted string, as in label=\"{{{{{name}}}}}\""
    )]
    Unquoted { name: String },
    /// A value with a backtick inside a raw (backtick) string, which cannot be escaped.
    #[error(
        "the value of {{{{{name}}}}} contains a backtick, which a `raw` PromQL string cannot hold; use double quotes"
    )]
    BacktickInRawString { name: String },
    /// `{{` without a closing `}}`.
    #[error("a placeholder is not closed with }}}}")]
    Unclosed,
}

/// The values a template may use, by placeholder name.
pub type Values = BTreeMap<String, String>;

/// The placeholder values of a wave: its cohort keys, `wave` and `namespace`.
pub fn wave_values(cohort: &BTreeMap<String, String>, wave: &str, namespace: &str) -> Values {
    let mut values = cohort.clone();
    values.insert("wave".into(), wave.into());
    values.insert("namespace".into(), namespace.into());
    values
}

fn escape_quoted(value: &str, quote: char) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// Renders `template` with `values`.
pub fn render(template: &str, values: &Values) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len());
    // The quote character of the string literal we are inside, if any.
    let mut quote: Option<char> = None;
    let mut chars = template.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '{' && template[i..].starts_with("{{") {
            let end = template[i + 2..]
                .find("}}")
                .ok_or(TemplateError::Unclosed)?;
            let name = template[i + 2..i + 2 + end].trim();
            let value = values
                .get(name)
                .ok_or_else(|| TemplateError::UnknownPlaceholder {
                    name: name.to_owned(),
                    known: values.keys().cloned().collect::<Vec<_>>().join(", "),
                })?;
            match quote {
                Some('`') if value.contains('`') => {
                    return Err(TemplateError::BacktickInRawString {
                        name: name.to_owned(),
                    });
                }
                Some('`') => out.push_str(value),
                Some(q) => out.push_str(&escape_quoted(value, q)),
                None => {
                    return Err(TemplateError::Unquoted {
                        name: name.to_owned(),
                    });
                }
            }
            // Skip the rest of the placeholder.
            let skip_to = i + 2 + end + 2;
            while chars.peek().is_some_and(|(j, _)| *j < skip_to) {
                chars.next();
            }
            continue;
        }
        out.push(c);
        match (quote, c) {
            (None, '"' | '\'' | '`') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (Some('"' | '\''), '\\') => {
                // An escape inside a string: copy the escaped character verbatim.
                if let Some((_, next)) = chars.next() {
                    out.push(next);
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(team: &str) -> Values {
        wave_values(
            &BTreeMap::from([
                ("team".into(), team.into()),
                ("region".into(), "emea".into()),
            ]),
            "support-emea",
            "crm",
        )
    }

    #[test]
    fn substitutes_every_placeholder() {
        let q = r#"sum(rate(x{team="{{team}}",region="{{ region }}",wave="{{wave}}",ns="{{namespace}}"}[5m]))"#;
        assert_eq!(
            render(q, &values("support")).unwrap(),
            r#"sum(rate(x{team="support",region="emea",wave="support-emea",ns="crm"}[5m]))"#
        );
    }

    #[test]
    fn hostile_values_stay_inside_their_string() {
        let hostile = r#"support"} or vector(1) or x{a="\"#;
        let rendered = render(r#"x{team="{{team}}"}"#, &values(hostile)).unwrap();
        assert_eq!(rendered, r#"x{team="support\"} or vector(1) or x{a=\"\\"}"#);
        let single = render("x{team='{{team}}'}", &values("o'brien {braces}")).unwrap();
        assert_eq!(single, r"x{team='o\'brien {braces}'}");
        let newline = render(r#"x{team="{{team}}"}"#, &values("a\nb")).unwrap();
        assert_eq!(newline, r#"x{team="a\nb"}"#);
    }

    #[test]
    fn placeholders_outside_strings_are_refused() {
        let err = render("x{team={{team}}}", &values("support")).unwrap_err();
        assert_eq!(
            err,
            TemplateError::Unquoted {
                name: "team".into()
            }
        );
        assert!(
            err.to_string().contains("must be inside a quoted string"),
            "{err}"
        );
        assert!(matches!(
            render("x{team=`{{team}}`}", &values("a`b")),
            Err(TemplateError::BacktickInRawString { .. })
        ));
        assert_eq!(
            render("x{team=`{{team}}`}", &values("ok")).unwrap(),
            "x{team=`ok`}"
        );
    }

    #[test]
    fn unknown_and_unclosed_placeholders_are_refused() {
        let err = render(r#"x{tier="{{tier}}"}"#, &values("s")).unwrap_err();
        assert!(
            err.to_string().contains("unknown placeholder {{tier}}"),
            "{err}"
        );
        assert_eq!(
            render(r#"x{a="{{team"}"#, &values("s")),
            Err(TemplateError::Unclosed)
        );
    }

    #[test]
    fn escaped_quotes_in_the_template_do_not_end_the_string() {
        let q = r#"x{a="say \"hi\" {{team}}"}"#;
        assert_eq!(
            render(q, &values("s\"")).unwrap(),
            r#"x{a="say \"hi\" s\""}"#
        );
    }
}
