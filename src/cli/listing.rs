//! What `ls` commands share: `-q` (names only), `--filter KEY=VALUE` (on the fields of
//! the `--json` output, repeatable, all must match) and `--format` (a Go-template-like
//! line: `{{.Name}}\t{{.Driver}}`; field names match the JSON keys, any case).

use crate::error::{Error, Result};
use serde_json::Value;

#[derive(clap::Args, Debug, Default, Clone)]
pub struct ListOpts {
    /// Print only the names, one per line.
    #[arg(short, long)]
    pub quiet: bool,
    /// Only rows whose field KEY (a key of the --json output) equals VALUE (or, for a
    /// list, contains it); repeatable, all must match.
    #[arg(long = "filter", value_name = "KEY=VALUE")]
    pub filters: Vec<String>,
    /// One line per row from a template: `{{.Name}} {{.Subnets}}` (fields as in --json).
    #[arg(long)]
    pub format: Option<String>,
}

fn field<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Array(a) => a.iter().map(text).collect::<Vec<_>>().join(","),
        Value::Object(o) => {
            // Objects show as the CLI writes them: a subnet or name by its main field, a
            // port range as N or N-M, a selector by its value, labels as k=v,...
            if let (Some(lo), Some(hi)) = (o.get("lo"), o.get("hi")) {
                return if lo == hi {
                    text(lo)
                } else {
                    format!("{}-{}", text(lo), text(hi))
                };
            }
            if let (Some(_), Some(value)) = (o.get("kind"), o.get("value")) {
                return text(value);
            }
            if let Some(main) = ["subnet", "name", "address"].iter().find_map(|k| o.get(*k)) {
                return text(main);
            }
            if o.values().all(Value::is_string) {
                return o
                    .iter()
                    .map(|(k, v)| format!("{k}={}", text(v)))
                    .collect::<Vec<_>>()
                    .join(",");
            }
            v.to_string()
        }
        other => other.to_string(),
    }
}

impl ListOpts {
    fn parsed_filters(&self) -> Result<Vec<(String, String)>> {
        self.filters
            .iter()
            .map(|f| {
                f.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .filter(|(k, _)| !k.is_empty())
                    .ok_or_else(|| Error::invalid("--filter", f, "expected KEY=VALUE"))
            })
            .collect()
    }

    /// The rows that pass every filter. A filter on a field no row has is an error (a
    /// typo would otherwise silently match nothing).
    pub fn select(&self, rows: Vec<Value>) -> Result<Vec<Value>> {
        let filters = self.parsed_filters()?;
        if let Some(first) = rows.first() {
            for (k, _) in &filters {
                if field(first, k).is_none() {
                    let keys: Vec<String> = first
                        .as_object()
                        .map(|o| o.keys().cloned().collect())
                        .unwrap_or_default();
                    return Err(Error::invalid(
                        "--filter",
                        k,
                        format!("no such field; fields: {}", keys.join(", ")),
                    ));
                }
            }
        }
        Ok(rows
            .into_iter()
            .filter(|r| {
                filters.iter().all(|(k, want)| match field(r, k) {
                    Some(Value::Array(a)) => a.iter().any(|x| text(x) == *want),
                    Some(v) => text(v) == *want,
                    None => false,
                })
            })
            .collect())
    }

    /// Filters typed rows by their JSON form; prints them when `-q` or `--format` asked
    /// (None: done), else gives back the rows that passed for the usual table or JSON.
    pub fn apply<T: serde::Serialize>(
        &self,
        rows: Vec<T>,
        name_key: &str,
    ) -> Result<Option<Vec<T>>> {
        let values: Vec<Value> = rows
            .iter()
            .map(|r| serde_json::to_value(r).unwrap_or_default())
            .collect();
        let kept = self.select(values.clone())?;
        let (rows, values): (Vec<T>, Vec<Value>) = rows
            .into_iter()
            .zip(values)
            .filter(|(_, v)| kept.contains(v))
            .unzip();
        if self.print(&values, name_key)? {
            return Ok(None);
        }
        Ok(Some(rows))
    }

    /// Prints the rows as `-q` or `--format` ask; false if neither was given (the
    /// caller prints its table or JSON).
    pub fn print(&self, rows: &[Value], name_key: &str) -> Result<bool> {
        if self.quiet {
            for r in rows {
                println!("{}", field(r, name_key).map(text).unwrap_or_default());
            }
            return Ok(true);
        }
        let Some(tpl) = &self.format else {
            return Ok(false);
        };
        for r in rows {
            println!("{}", render(tpl, r)?);
        }
        Ok(true)
    }
}

/// `{{.Field}}` replaced by the row's field; `\t` and `\n` as escapes.
pub fn render(tpl: &str, row: &Value) -> Result<String> {
    let mut out = String::new();
    let mut rest = tpl;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| Error::invalid("--format", tpl, "unclosed {{"))?;
        let expr = after[..end].trim();
        let key = expr.strip_prefix('.').ok_or_else(|| {
            Error::invalid(
                "--format",
                tpl,
                format!("{{{{{expr}}}}}: expected {{{{.Field}}}}"),
            )
        })?;
        match field(row, key) {
            Some(v) => out.push_str(&text(v)),
            None => {
                return Err(Error::invalid("--format", tpl, format!("no field {key:?}")));
            }
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out.replace("\\t", "\t").replace("\\n", "\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rows() -> Vec<Value> {
        vec![
            json!({"name": "a", "driver": "bridge", "subnets": [{"subnet": "10.0.0.0/24"}], "attached": 2}),
            json!({"name": "b", "driver": "ptp", "subnets": [{"subnet": "10.1.0.0/24"}], "attached": 0}),
        ]
    }

    #[test]
    fn filters_match_fields_and_list_members() {
        let o = ListOpts {
            filters: vec!["driver=ptp".into()],
            ..Default::default()
        };
        let r = o.select(rows()).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0]["name"], "b");
        let o = ListOpts {
            filters: vec!["Subnets=10.0.0.0/24".into(), "attached=2".into()],
            ..Default::default()
        };
        assert_eq!(o.select(rows()).unwrap().len(), 1);
        let o = ListOpts {
            filters: vec!["colour=red".into()],
            ..Default::default()
        };
        assert!(o.select(rows()).unwrap_err().to_string().contains("colour"));
        let o = ListOpts {
            filters: vec!["nokey".into()],
            ..Default::default()
        };
        assert!(
            o.select(rows())
                .unwrap_err()
                .to_string()
                .contains("KEY=VALUE")
        );
    }

    #[test]
    fn objects_render_as_the_cli_writes_them() {
        let port = json!({"proto": "tcp", "lo": 80, "hi": 90});
        assert_eq!(text(&port), "80-90");
        assert_eq!(text(&json!({"proto": "tcp", "lo": 80, "hi": 80})), "80");
        assert_eq!(
            text(&json!({"kind": "labels", "value": {"app": "x", "tier": "db"}})),
            "app=x,tier=db"
        );
        assert_eq!(text(&json!({"kind": "sandbox", "value": "web"})), "web");
    }

    #[test]
    fn templates_render_fields() {
        let r = &rows()[0];
        assert_eq!(
            render("{{.Name}}\\t{{.Subnets}} {{ .attached }}", r).unwrap(),
            "a\t10.0.0.0/24 2"
        );
        assert!(
            render("{{.Nope}}", r)
                .unwrap_err()
                .to_string()
                .contains("Nope")
        );
        assert!(render("{{.Name", r).is_err());
        assert!(render("{{Name}}", r).is_err());
    }
}
