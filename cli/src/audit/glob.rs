//! `--image PATTERN`: `*` and `**` as in allowlist patterns (any characters
//! but `/`, and any characters), `?` one character but `/`, but anywhere in
//! the pattern. The policy's own matcher (policy/src/glob.rs) takes
//! wildcards only at the end, which would rule out a query as plain as
//! `*/nginx*`.

use anyhow::{Result, bail};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(String),
    /// `?`
    One,
    /// `*`
    Segment,
    /// `**`
    Anything,
}

#[derive(Debug, Clone)]
pub struct ImageGlob {
    tokens: Vec<Token>,
}

impl ImageGlob {
    pub fn parse(pattern: &str) -> Result<ImageGlob> {
        if pattern.is_empty() {
            bail!("--image: empty pattern");
        }
        if pattern.chars().any(|c| c.is_whitespace() || c.is_control()) {
            bail!("--image {pattern:?}: contains whitespace or control characters");
        }
        let mut tokens = Vec::new();
        let mut chars = pattern.chars().peekable();
        while let Some(c) = chars.next() {
            let token = match c {
                '?' => Token::One,
                '*' if chars.peek() == Some(&'*') => {
                    chars.next();
                    while chars.peek() == Some(&'*') {
                        chars.next();
                    }
                    Token::Anything
                }
                '*' => Token::Segment,
                other => {
                    if let Some(Token::Literal(text)) = tokens.last_mut() {
                        text.push(other);
                        continue;
                    }
                    Token::Literal(other.to_string())
                }
            };
            tokens.push(token);
        }
        Ok(ImageGlob { tokens })
    }

    /// Literal text every matching line contains, the longest there is: a
    /// line without it need not be parsed. Split at `@`, as one candidate,
    /// `repository@digest`, is joined from two fields of the record.
    pub fn required_text(&self) -> Option<&str> {
        self.tokens
            .iter()
            .filter_map(|t| match t {
                Token::Literal(text) => Some(text.split('@')),
                _ => None,
            })
            .flatten()
            .filter(|piece| !piece.is_empty())
            .max_by_key(|piece| piece.len())
    }

    pub fn matches(&self, candidate: &str) -> bool {
        matches_from(&self.tokens, candidate)
    }
}

fn matches_from(tokens: &[Token], text: &str) -> bool {
    let Some((first, rest)) = tokens.split_first() else {
        return text.is_empty();
    };
    match first {
        Token::Literal(literal) => text
            .strip_prefix(literal.as_str())
            .is_some_and(|after| matches_from(rest, after)),
        Token::One => {
            let mut chars = text.chars();
            chars.next().is_some_and(|c| c != '/') && matches_from(rest, chars.as_str())
        }
        Token::Segment | Token::Anything => {
            let crosses_slash = *first == Token::Anything;
            // Each split point, shortest match first; patterns are a few
            // tokens and image names short, so backtracking stays cheap.
            for (at, c) in text.char_indices() {
                if matches_from(rest, &text[at..]) {
                    return true;
                }
                if c == '/' && !crosses_slash {
                    return false;
                }
            }
            matches_from(rest, "")
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn glob(pattern: &str) -> ImageGlob {
        ImageGlob::parse(pattern).unwrap()
    }

    #[test]
    fn wildcards_match_as_in_allowlists_but_anywhere() {
        assert!(glob("reg.example/app").matches("reg.example/app"));
        assert!(!glob("reg.example/app").matches("reg.example/app2"));
        assert!(glob("reg.example/*").matches("reg.example/app"));
        assert!(!glob("reg.example/*").matches("reg.example/team/app"));
        assert!(glob("reg.example/**").matches("reg.example/team/app"));
        assert!(glob("*/nginx*").matches("docker.io/nginx:1.27"));
        assert!(!glob("*/nginx*").matches("docker.io/library/nginx:1.27"));
        assert!(glob("**/nginx*").matches("docker.io/library/nginx:1.27"));
        assert!(glob("**nginx**").matches("docker.io/library/nginx@sha256:ab"));
        assert!(glob("reg/app:1.?").matches("reg/app:1.2"));
        assert!(!glob("reg/app:1.?").matches("reg/app:1.22"));
        assert!(!glob("reg?app").matches("reg/app"));
        assert!(glob("*").matches(""));
        assert!(glob("a*b*c").matches("aXbYc"));
        assert!(!glob("a*b*c").matches("aXbY"));
    }

    #[test]
    fn the_required_text_is_the_longest_literal() {
        assert_eq!(glob("*/nginx*").required_text(), Some("/nginx"));
        assert_eq!(glob("reg.example/**").required_text(), Some("reg.example/"));
        assert_eq!(glob("**").required_text(), None);
        assert_eq!(glob("reg/app@sha256:0*").required_text(), Some("sha256:0"));
        assert_eq!(glob("@").required_text(), None);
        assert!(ImageGlob::parse("").is_err());
        assert!(ImageGlob::parse("a b").is_err());
    }
}
