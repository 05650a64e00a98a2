//! A small RFC 4180 CSV reader for the OPE inputs (Open Bandit Dataset logs, action
//! distribution files): comma separated, optional double-quoted fields with `""` escapes and
//! embedded newlines, LF or CRLF line ends, blank lines skipped.

use std::path::Path;

use super::OpeError;

/// Reads `path` and calls `f(line, fields)` for every record, header included (line numbers are
/// 1-based and name the line where the record starts).
pub(crate) fn for_each_record<F>(path: &Path, f: F) -> Result<(), OpeError>
where
    F: FnMut(usize, &[String]) -> Result<(), OpeError>,
{
    let text = std::fs::read_to_string(path).map_err(|source| OpeError::Io { path: path.to_path_buf(), source })?;
    parse_records(path, &text, f)
}

/// Parses CSV `text` (named `path` in errors) record by record.
pub(crate) fn parse_records<F>(path: &Path, text: &str, mut f: F) -> Result<(), OpeError>
where
    F: FnMut(usize, &[String]) -> Result<(), OpeError>,
{
    let csv_error =
        |line: usize, message: &str| OpeError::Csv { path: path.to_path_buf(), line, message: message.to_string() };
    let mut fields: Vec<String> = Vec::new();
    let mut field = String::new();
    let mut in_quotes = false;
    // Whether the current field was quoted (then only a separator or line end may follow).
    let mut quoted = false;
    let mut line = 1usize;
    let mut record_line = 1usize;
    let mut chars = text.chars().peekable();

    let mut end_record =
        |fields: &mut Vec<String>, field: &mut String, quoted: bool, record_line: usize| -> Result<(), OpeError> {
            let blank = fields.is_empty() && field.is_empty() && !quoted;
            fields.push(std::mem::take(field));
            if !blank {
                f(record_line, fields)?;
            }
            fields.clear();
            Ok(())
        };

    while let Some(c) = chars.next() {
        if in_quotes {
            match c {
                '"' => {
                    if chars.peek() == Some(&'"') {
                        chars.next();
                        field.push('"');
                    } else {
                        in_quotes = false;
                    }
                }
                '\n' => {
                    line += 1;
                    field.push(c);
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.is_empty() && !quoted => {
                in_quotes = true;
                quoted = true;
            }
            '"' => return Err(csv_error(line, "unexpected '\"' inside an unquoted field")),
            ',' => {
                fields.push(std::mem::take(&mut field));
                quoted = false;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                end_record(&mut fields, &mut field, quoted, record_line)?;
                quoted = false;
                line += 1;
                record_line = line;
            }
            _ if quoted => return Err(csv_error(line, "text after a closing quote")),
            _ => field.push(c),
        }
    }
    if in_quotes {
        return Err(csv_error(record_line, "unterminated quoted field"));
    }
    end_record(&mut fields, &mut field, quoted, record_line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<(usize, Vec<String>)>, OpeError> {
        let mut out = Vec::new();
        parse_records(Path::new("t.csv"), text, |line, fields| {
            out.push((line, fields.to_vec()));
            Ok(())
        })?;
        Ok(out)
    }

    #[test]
    fn parses_plain_quoted_and_crlf_records() {
        let rows = parse(",a,b\r\n0,\"x,y\",\"say \"\"hi\"\"\"\n\n1,\"multi\nline\",3").unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0], (1, vec!["".into(), "a".into(), "b".into()]));
        assert_eq!(rows[1], (2, vec!["0".into(), "x,y".into(), "say \"hi\"".into()]));
        assert_eq!(rows[2], (4, vec!["1".into(), "multi\nline".into(), "3".into()]));
    }

    #[test]
    fn trailing_newline_and_empty_last_field() {
        let rows = parse("a,b\n1,\n").unwrap();
        assert_eq!(rows[1].1, vec!["1".to_string(), String::new()]);
        assert_eq!(rows.len(), 2);
    }

    #[test]
    fn rejects_malformed_quotes() {
        assert_eq!(parse("a\n\"open").unwrap_err().code(), "ope_csv");
        assert_eq!(parse("a\nx\"y").unwrap_err().code(), "ope_csv");
        assert_eq!(parse("a\n\"x\"y").unwrap_err().code(), "ope_csv");
    }
}
