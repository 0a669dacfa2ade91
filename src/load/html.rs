//! compare.html: the report as one self-contained page (no external
//! resources, no scripts): the caption, the chart inline as SVG, and every
//! table of [`compare::tables`] as an HTML table.

use std::fmt::Write as _;

use super::compare::{self, Results, Table};

/// The page's style sheet: readable on a projector and in print.
const STYLE: &str =
    "body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;\
margin:24px auto;max-width:1440px;padding:0 16px;color:#1a1a1a;line-height:1.4}\
h1{font-size:1.6em;margin:0 0 .3em}h2{font-size:1.2em;margin:1.6em 0 .4em}\
p.caption{color:#444;margin:.2em 0}figure{margin:1em 0}svg{max-width:100%;height:auto}\
table{border-collapse:collapse;font-variant-numeric:tabular-nums;margin:.4em 0}\
th,td{border:1px solid #ccc;padding:3px 9px;text-align:left}th{background:#eef1f5}\
td.n,th.n{text-align:right}tbody tr:nth-child(even){background:#f7f8fa}\
ul.notes{color:#444;font-size:.92em}";

/// Escapes text for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
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

/// The page's heading: "Fork vs thread: sockserv REV, STAMP", as compare.md's.
pub fn title(r: &Results) -> String {
    match r.meta {
        Some(_) => format!(
            "Fork vs thread: sockserv {}, {}",
            r.meta("rev"),
            r.meta("stamp")
        ),
        None => "Fork vs thread".to_string(),
    }
}

/// The run's other settings from meta.json, one sentence of the parts it
/// has; empty without it.
fn settings(r: &Results) -> String {
    let Some(meta) = &r.meta else {
        return String::new();
    };
    let parts = [
        ("loadavg_start", "load average {} before"),
        ("loadavg_end", "{} after"),
        ("wall_s", "{} s wall"),
        ("policies", "policies {}"),
        ("transports", "transports {}"),
        ("workloads", "workloads {}"),
        ("idle", "{} idle connections"),
        ("workers", "prefork {} workers"),
        ("pool_threads", "pool {} threads"),
        ("delay_ms", "delay {} ms"),
        ("cpu_rounds", "cpu {} rounds"),
        ("timeout_s", "sockload timeout {} s"),
        ("sources", "TCP from {} source addresses"),
    ];
    let said: Vec<String> = (parts.iter())
        .filter(|(k, _)| meta.contains_key(*k))
        .map(|(k, how)| how.replace("{}", &r.meta(k).replace(' ', "/")))
        .collect();
    match said.join("; ") {
        s if s.is_empty() => s,
        s => format!("{}{}.", s[..1].to_uppercase(), &s[1..]),
    }
}

fn table(html: &mut String, t: &Table) {
    let _ = writeln!(html, "<section>\n<h2>{}</h2>", escape(&t.title));
    if !t.intro.is_empty() {
        let _ = writeln!(html, "<p>{}</p>", escape(&t.intro));
    }
    let class = |i: usize| {
        if t.right.get(i) == Some(&true) {
            " class=\"n\""
        } else {
            ""
        }
    };
    html.push_str("<table>\n<thead><tr>");
    for (i, h) in t.header.iter().enumerate() {
        let _ = write!(html, "<th{}>{}</th>", class(i), escape(h));
    }
    html.push_str("</tr></thead>\n<tbody>\n");
    for row in &t.rows {
        html.push_str("<tr>");
        for (i, cell) in row.iter().enumerate() {
            let _ = write!(html, "<td{}>{}</td>", class(i), escape(cell));
        }
        html.push_str("</tr>\n");
    }
    html.push_str("</tbody>\n</table>\n");
    list(html, &t.notes);
    html.push_str("</section>\n");
}

fn list(html: &mut String, items: &[String]) {
    if items.is_empty() {
        return;
    }
    html.push_str("<ul class=\"notes\">\n");
    for item in items {
        let _ = writeln!(html, "<li>{}</li>", escape(item));
    }
    html.push_str("</ul>\n");
}

/// The whole page. `svg` is the chart ([`super::chart::render`]), inlined
/// as it is: plotters escapes the text it draws.
pub fn page(r: &Results, svg: Option<&str>) -> String {
    let mut html = String::new();
    let title = escape(&title(r));
    let _ = writeln!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{title}</h1>"
    );
    for line in [r.caption(), settings(r)] {
        if !line.is_empty() {
            let _ = writeln!(html, "<p class=\"caption\">{}</p>", escape(&line));
        }
    }
    if let Some(svg) = svg {
        let svg = svg.trim_start_matches(|c: char| c != '<');
        let svg = svg.strip_prefix("<?xml").map_or(svg, |rest| {
            rest.split_once("?>")
                .map_or(rest, |(_, after)| after.trim_start())
        });
        let _ = writeln!(html, "<figure>\n{}\n</figure>", svg.trim_end());
    }
    for t in compare::tables(r) {
        table(&mut html, &t);
    }
    if !r.notes.is_empty() {
        html.push_str("<section>\n<h2>notes</h2>\n");
        list(&mut html, &r.notes);
        html.push_str("</section>\n");
    }
    html.push_str("</body>\n</html>\n");
    html
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::compare::{read_dir, Slow};

    fn slow(policy: &str, silent: u64, outcome: &str) -> Slow {
        serde_json::from_str(&format!(
            r#"{{"kind":"slow","policy":"{policy}","transport":"tcp","silent":{silent},
               "stalled":{silent},"bound_s":5.0,{outcome},"note":""}}"#
        ))
        .unwrap()
    }

    #[test]
    fn escape_covers_markup_and_quotes() {
        assert_eq!(
            escape(r#"<a href="x">&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn page_has_caption_tables_notes_and_the_chart_inline() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("meta.json"),
            r#"{"kind":"meta","cpu":"Test <CPU>","cpus":"2","kernel":"6.1","rev":"abc1234",
               "stamp":"20261201T000000Z","duration_s":"2","warmup_s":"0.5","connections":"16",
               "loadavg_start":"1.0 2.0 3.0"}"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("idle-01-fork-tcp.json"),
            r#"{"kind":"idle","server":"sockserv","policy":"fork","transport":"tcp","connections":100,
               "pss_before_kib":1000,"pss_after_kib":4500,"processes":101,"threads":101,
               "note":"a note & more"}"#,
        )
        .unwrap();
        let mut r = read_dir(dir.path()).unwrap();
        r.slow.push(slow(
            "fork",
            100,
            r#""latency_us":812.0,"locked_out":false,"refused":false"#,
        ));
        r.slow.push(slow(
            "sync",
            100,
            r#""latency_us":null,"locked_out":true,"refused":false"#,
        ));
        let html = page(
            &r,
            Some("<?xml version=\"1.0\"?>\n<svg viewBox=\"0 0 1 1\"></svg>"),
        );
        assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
        assert!(html.ends_with("</html>\n"), "{html}");
        assert!(!html.contains("<?xml"), "{html}");
        assert!(
            html.contains("<figure>\n<svg viewBox=\"0 0 1 1\"></svg>\n</figure>"),
            "{html}"
        );
        assert!(
            html.contains("<title>Fork vs thread: sockserv abc1234, 20261201T000000Z</title>"),
            "{html}"
        );
        assert!(
            html.contains("Test &lt;CPU&gt; (2 CPUs), Linux 6.1"),
            "{html}"
        );
        assert!(html.contains("Load average 1.0/2.0/3.0 before"), "{html}");
        assert!(
            html.contains("<h2>memory held by idle connections</h2>"),
            "{html}"
        );
        assert!(
            html.contains("<tr><td>fork</td><td>tcp</td><td class=\"n\">100</td>"),
            "{html}"
        );
        assert!(html.contains("<td class=\"n\">35.0</td>"), "{html}");
        assert!(html.contains("<h2>slow clients</h2>"), "{html}");
        assert!(html.contains("<th class=\"n\">N = 100</th>"), "{html}");
        assert!(html.contains("<td class=\"n\">812 µs</td>"), "{html}");
        assert!(
            html.contains("<td class=\"n\">locked out (&gt;5 s)</td>"),
            "{html}"
        );
        assert!(
            html.contains("<li>idle fork tcp: a note &amp; more</li>"),
            "{html}"
        );
        assert!(
            !html.contains("<script") && !html.contains("http"),
            "{html}"
        );
    }

    #[test]
    fn without_meta_or_chart_the_page_still_has_its_tables() {
        let mut r = Results::default();
        r.slow.push(slow(
            "event",
            10,
            r#""latency_us":null,"locked_out":false,"refused":true"#,
        ));
        let html = page(&r, None);
        assert!(html.contains("<h1>Fork vs thread</h1>"), "{html}");
        assert!(
            !html.contains("<figure>") && !html.contains("class=\"caption\""),
            "{html}"
        );
        assert!(
            html.contains("<td>event</td><td class=\"n\">refused</td>"),
            "{html}"
        );
    }
}
