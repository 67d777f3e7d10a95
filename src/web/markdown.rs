//! Markdown from pushed content (a Helm chart's README.md) as HTML a page may embed:
//! rendered with pulldown-cmark, then sanitised with ammonia, which keeps only an allow-list
//! of tags and attributes (no `<script>`, `<style>`, event handlers, `javascript:` URLs).
//! This is the one place the web UI emits HTML it did not write itself.

use pulldown_cmark::{Options, Parser, html};

/// The sanitised HTML of `markdown`.
pub fn render(markdown: &str) -> String {
    let parser = Parser::new_ext(
        markdown,
        Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS,
    );
    let mut unsafe_html = String::with_capacity(markdown.len() * 3 / 2);
    html::push_html(&mut unsafe_html, parser);
    ammonia::Builder::default()
        .link_rel(Some("noopener noreferrer nofollow"))
        .clean(&unsafe_html)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::render;

    #[test]
    fn markdown_becomes_html() {
        let out = render("# Title\n\nSome *text* and `code`.\n\n| a | b |\n|---|---|\n| 1 | 2 |\n");
        assert!(out.contains("<h1>Title</h1>"), "{out}");
        assert!(out.contains("<em>text</em>"), "{out}");
        assert!(out.contains("<code>code</code>"), "{out}");
        assert!(out.contains("<table>"), "{out}");
    }

    #[test]
    fn scripts_handlers_and_javascript_urls_are_removed() {
        let out = render(
            "<script>alert(1)</script>\n\n<img src=\"x.png\" onerror=\"alert(2)\">\n\n[link](javascript:alert(3))\n\n<style>body{}</style><iframe src=\"https://example.invalid\"></iframe>",
        );
        for bad in [
            "<script",
            "alert(1)",
            "onerror",
            "javascript:",
            "<style",
            "<iframe",
        ] {
            assert!(!out.contains(bad), "{bad} left in {out}");
        }
        assert!(out.contains("<img src=\"x.png\""), "{out}");
    }

    #[test]
    fn links_do_not_give_the_page_away() {
        let out = render("[site](https://example.invalid/)");
        assert!(
            out.contains("rel=\"noopener noreferrer nofollow\""),
            "{out}"
        );
    }
}
