//! Prompts as AUTOMATIC1111 writes them: `(word)` ×1.1, `((word))` ×1.21, `(word:1.3)`,
//! `[word]` ÷1.1, `\(` escapes, `BREAK`, and prompts longer than 75 tokens split into
//! 77-token chunks (breaking after a comma within the last 20 tokens, as A1111's
//! `comma_padding_backtrack` does). The rules follow A1111's `parse_prompt_attention` and
//! `tokenize_line`: an unmatched `)` or `]` is literal text; an unclosed `(` or `[` applies
//! to the end of the prompt.

use crate::error::Result;
use crate::tokenizer::{BOS, ClipTokenizer, EOS};

/// Token id of `,</w>`.
pub const COMMA: u32 = 267;
/// How far back A1111 looks for a comma to break a full chunk at.
pub const COMMA_BACKTRACK: usize = 20;

/// One piece of parsed prompt text and its attention weight; `BREAK` is `None`.
pub type Segment = (Option<String>, f32);

fn multiply(res: &mut [Segment], from: usize, by: f32) {
    for s in &mut res[from..] {
        s.1 *= by;
    }
}

/// Splits `text` into (text, weight) runs (A1111's `parse_prompt_attention`); `BREAK` runs are
/// `(None, -1)`. Adjacent runs of equal weight are merged.
pub fn parse_attention(text: &str) -> Vec<Segment> {
    let mut res: Vec<Segment> = Vec::new();
    let (mut round, mut square): (Vec<usize>, Vec<usize>) = (Vec::new(), Vec::new());
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    let mut plain = String::new();
    let flush = |plain: &mut String, res: &mut Vec<Segment>| {
        if plain.is_empty() {
            return;
        }
        // BREAK (as a word, with surrounding whitespace) separates chunks.
        let mut rest = plain.as_str();
        let mut first = true;
        loop {
            let found = find_break(rest);
            let (head, tail) = match found {
                Some((s, e)) => (&rest[..s], Some(&rest[e..])),
                None => (rest, None),
            };
            if !first {
                res.push((None, -1.0));
            }
            res.push((Some(head.to_owned()), 1.0));
            first = false;
            match tail {
                Some(t) => rest = t,
                None => break,
            }
        }
        plain.clear();
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\\' if i + 1 < chars.len() && matches!(chars[i + 1], '(' | ')' | '[' | ']' | '\\') => {
                flush(&mut plain, &mut res);
                res.push((Some(chars[i + 1].to_string()), 1.0));
                i += 2;
                continue;
            }
            '(' => {
                flush(&mut plain, &mut res);
                round.push(res.len());
            }
            '[' => {
                flush(&mut plain, &mut res);
                square.push(res.len());
            }
            ':' => {
                // `:\s*number\s*)` closes a round bracket with an explicit weight.
                let rest: String = chars[i + 1..].iter().collect();
                let trimmed = rest.trim_start();
                let num_len = trimmed
                    .find(|ch: char| !(ch.is_ascii_digit() || ch == '.' || ch == '+' || ch == '-'))
                    .unwrap_or(trimmed.len());
                let after = trimmed[num_len..].trim_start();
                let weight = trimmed[..num_len].parse::<f32>().ok();
                if let (Some(w), true, false) = (weight, after.starts_with(')'), round.is_empty()) {
                    flush(&mut plain, &mut res);
                    let start = round.pop().unwrap_or(0);
                    multiply(&mut res, start, w);
                    let consumed = rest.len() - after.len() + 1;
                    i += 1 + rest[..consumed].chars().count();
                    continue;
                }
                plain.push(c);
            }
            ')' if !round.is_empty() => {
                flush(&mut plain, &mut res);
                let start = round.pop().unwrap_or(0);
                multiply(&mut res, start, 1.1);
            }
            ']' if !square.is_empty() => {
                flush(&mut plain, &mut res);
                let start = square.pop().unwrap_or(0);
                multiply(&mut res, start, 1.0 / 1.1);
            }
            _ => plain.push(c),
        }
        i += 1;
    }
    flush(&mut plain, &mut res);
    for start in round {
        multiply(&mut res, start, 1.1);
    }
    for start in square {
        multiply(&mut res, start, 1.0 / 1.1);
    }
    if res.is_empty() {
        res.push((Some(String::new()), 1.0));
    }
    let mut merged: Vec<Segment> = Vec::with_capacity(res.len());
    for seg in res {
        match merged.last_mut() {
            Some((Some(t), w)) if seg.0.is_some() && *w == seg.1 => {
                t.push_str(seg.0.as_deref().unwrap_or(""))
            }
            _ => merged.push(seg),
        }
    }
    merged
}

/// Byte range of the first `\s*\bBREAK\b\s*` in `s`.
fn find_break(s: &str) -> Option<(usize, usize)> {
    let mut from = 0;
    while let Some(p) = s[from..].find("BREAK") {
        let (start, end) = (from + p, from + p + 5);
        let before_ok = s[..start]
            .chars()
            .next_back()
            .is_none_or(|c| !c.is_alphanumeric() && c != '_');
        let after_ok = s[end..]
            .chars()
            .next()
            .is_none_or(|c| !c.is_alphanumeric() && c != '_');
        if before_ok && after_ok {
            let ws_start = s[..start].trim_end().len();
            let ws_end = end + (s[end..].len() - s[end..].trim_start().len());
            return Some((ws_start, ws_end));
        }
        from = end;
    }
    None
}

/// A 77-token chunk (the tokenizer's [`ClipTokenizer::max_length`]) and the weight of each
/// token.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// BOS, 75 tokens (EOS-padded), EOS.
    pub ids: Vec<u32>,
    /// One weight per id (1 for BOS/EOS/padding).
    pub weights: Vec<f32>,
}

fn close(tokens: &mut Vec<u32>, weights: &mut Vec<f32>, chunks: &mut Vec<Chunk>, size: usize) {
    let pad = size.saturating_sub(tokens.len());
    let mut ids = Vec::with_capacity(size + 2);
    ids.push(BOS);
    ids.append(tokens);
    ids.extend(std::iter::repeat_n(EOS, pad + 1));
    let mut w = Vec::with_capacity(size + 2);
    w.push(1.0);
    w.append(weights);
    w.extend(std::iter::repeat_n(1.0, pad + 1));
    chunks.push(Chunk { ids, weights: w });
}

/// Tokenises a prompt into weighted 77-token chunks (A1111's `tokenize_line`).
pub fn chunks(tokenizer: &ClipTokenizer, prompt: &str) -> Result<Vec<Chunk>> {
    let size = tokenizer.max_length() - 2;
    let close = |t: &mut Vec<u32>, w: &mut Vec<f32>, c: &mut Vec<Chunk>| close(t, w, c, size);
    let mut out = Vec::new();
    let (mut tokens, mut weights): (Vec<u32>, Vec<f32>) = (Vec::new(), Vec::new());
    let mut last_comma: Option<usize> = None;
    for (text, weight) in parse_attention(prompt) {
        let Some(text) = text else {
            close(&mut tokens, &mut weights, &mut out);
            last_comma = None;
            continue;
        };
        for id in tokenizer.tokens(&text)? {
            if id == COMMA {
                last_comma = Some(tokens.len());
            } else if tokens.len() == size
                && let Some(c) = last_comma
                && tokens.len() - c <= COMMA_BACKTRACK
            {
                let (rt, rw) = (tokens.split_off(c + 1), weights.split_off(c + 1));
                close(&mut tokens, &mut weights, &mut out);
                tokens = rt;
                weights = rw;
                last_comma = None;
            }
            if tokens.len() == size {
                close(&mut tokens, &mut weights, &mut out);
                last_comma = None;
            }
            tokens.push(id);
            weights.push(weight);
        }
    }
    if !tokens.is_empty() || out.is_empty() {
        close(&mut tokens, &mut weights, &mut out);
    }
    Ok(out)
}

/// (tokens, 77-token chunks) of a prompt as the encoder will see it, for the prompt box's
/// counter ("23/75", "80/150" as A1111 shows it); `<lora:…>` tags are not counted.
pub fn token_count(tokenizer: &ClipTokenizer, prompt: &str) -> Result<(usize, usize)> {
    let (text, _) = lora_tags(prompt);
    let chunks = chunks(tokenizer, &text)?;
    let tokens = chunks
        .iter()
        .flat_map(|c| &c.ids)
        .filter(|id| **id != BOS && **id != EOS)
        .count();
    Ok((tokens, chunks.len()))
}

/// Removes A1111 `<lora:NAME:WEIGHT>` / `<lora:NAME>` tags from a prompt; returns the text and
/// the tags (weight 1 when absent).
pub fn lora_tags(prompt: &str) -> (String, Vec<(String, f32)>) {
    let mut text = String::with_capacity(prompt.len());
    let mut tags = Vec::new();
    let mut rest = prompt;
    while let Some(start) = rest.find("<lora:") {
        let Some(len) = rest[start..].find('>') else {
            break;
        };
        text.push_str(&rest[..start]);
        let inner = &rest[start + 6..start + len];
        let mut parts = inner.split(':');
        let name = parts.next().unwrap_or("").trim().to_owned();
        let weight = parts
            .next()
            .and_then(|w| w.trim().parse().ok())
            .unwrap_or(1.0);
        if !name.is_empty() {
            tags.push((name, weight));
        }
        rest = &rest[start + len + 1..];
    }
    text.push_str(rest);
    let cleaned = text.split_whitespace().collect::<Vec<_>>().join(" ");
    (
        cleaned
            .trim_matches(|c: char| c == ',' || c.is_whitespace())
            .to_owned(),
        tags,
    )
}

#[cfg(test)]
mod token_count_tests {
    use super::*;

    #[test]
    fn counts_tokens_and_chunks_without_lora_tags() {
        let t = ClipTokenizer::sd15().expect("tokenizer");
        assert_eq!(token_count(&t, "").expect("count"), (0, 1));
        assert_eq!(
            token_count(&t, "a photo of a cat <lora:x:0.5>").expect("count"),
            (5, 1)
        );
        let long = vec!["cat"; 80].join(" ");
        assert_eq!(token_count(&t, &long).expect("count"), (80, 2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Vec<(String, f32)> {
        parse_attention(text)
            .into_iter()
            .map(|(t, w)| (t.unwrap_or_else(|| "BREAK".into()), (w * 1e4).round() / 1e4))
            .collect()
    }

    #[test]
    fn a1111_attention_syntax() {
        assert_eq!(p("normal text"), vec![("normal text".into(), 1.0)]);
        assert_eq!(
            p("an (important) word"),
            vec![
                ("an ".into(), 1.0),
                ("important".into(), 1.1),
                (" word".into(), 1.0)
            ]
        );
        assert_eq!(p("(unbalanced"), vec![("unbalanced".into(), 1.1)]);
        assert_eq!(p("\\(literal\\]"), vec![("(literal]".into(), 1.0)]);
        assert_eq!(
            p("(unnecessary)(parens)"),
            vec![("unnecessaryparens".into(), 1.1)]
        );
        assert_eq!(
            p("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky)))."),
            vec![
                ("a ".into(), 1.0),
                ("house".into(), 1.573),
                (" ".into(), 1.1),
                ("on".into(), 1.0),
                (" a ".into(), 1.1),
                ("hill".into(), 0.55),
                (", sun, ".into(), 1.1),
                ("sky".into(), 1.4641),
                (".".into(), 1.1),
            ]
        );
        assert_eq!(p("[cat:0.5]"), vec![("cat:0.5".into(), 0.9091)]);
        assert_eq!(
            p("a) b]"),
            vec![("a) b]".into(), 1.0)],
            "unmatched closers are literal"
        );
        assert_eq!(
            p("cat BREAK dog"),
            vec![
                ("cat".into(), 1.0),
                ("BREAK".into(), -1.0),
                ("dog".into(), 1.0)
            ]
        );
        assert_eq!(p("BREAKFAST"), vec![("BREAKFAST".into(), 1.0)]);
        assert_eq!(p(""), vec![("".into(), 1.0)]);
    }

    #[test]
    fn long_prompts_become_chunks_and_break_at_commas() {
        let t = ClipTokenizer::sd15().expect("tokenizer");
        let short = chunks(&t, "a photo of a cat").expect("chunks");
        assert_eq!(short.len(), 1);
        assert_eq!(
            short[0].ids,
            t.encode("a photo of a cat").expect("encode"),
            "≤ 75 tokens: the plain 77 ids"
        );
        let long = chunks(&t, &"cat ".repeat(100)).expect("chunks");
        assert_eq!(long.len(), 2);
        assert!(
            long.iter()
                .all(|c| c.ids.len() == 77 && c.ids[0] == BOS && c.ids[76] == EOS)
        );
        assert_eq!(long[1].ids[1..26], [2368; 25]);
        // 70 "cat", a comma, 10 "dog": the chunk breaks after the comma.
        let text = format!("{}, {}", "cat ".repeat(70).trim_end(), "dog ".repeat(10));
        let c = chunks(&t, &text).expect("chunks");
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].ids[71], COMMA);
        assert_eq!(c[0].ids[72], EOS, "the rest of the first chunk is padding");
        assert_eq!(c[1].ids[1], 1929, "dog starts the second chunk");
        let b = chunks(&t, "cat BREAK dog").expect("chunks");
        assert_eq!(b.len(), 2);
        let w = chunks(&t, "a (cat:1.5)").expect("chunks");
        assert_eq!(&w[0].weights[..4], &[1.0, 1.0, 1.5, 1.0]);
        // A word of several BPE tokens: every one of its tokens carries the weight.
        let n = t.tokens("photorealistically").expect("tokens").len();
        assert!(n > 1);
        let m = chunks(&t, "(photorealistically:1.2) cat").expect("chunks");
        assert!(m[0].weights[1..=n].iter().all(|w| (*w - 1.2).abs() < 1e-6));
        assert_eq!(m[0].weights[n + 1], 1.0);
    }
}
