//! CSV headers: parsing one, and checking it has the columns a job names (with the
//! nearest match when one is missing).

/// Parses a CSV header record into column names.
pub fn parse_csv_header(record: &[u8], delimiter: u8) -> Result<Vec<String>, String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .delimiter(delimiter)
        .from_reader(record);
    let mut fields = csv::StringRecord::new();
    match reader.read_record(&mut fields) {
        Ok(true) => Ok(fields
            .iter()
            .map(|f| f.trim_start_matches('\u{feff}').to_string())
            .collect()),
        Ok(false) => Err("empty header".into()),
        Err(e) => Err(format!("header is not valid CSV: {e}")),
    }
}

/// Checks that a CSV header has each wanted column (`(spec field, column)` pairs) exactly
/// once; the error names the header found and the nearest column (case, spaces, another
/// delimiter, a typo).
pub fn check_csv_header(header: &[String], wanted: &[(&str, &str)]) -> Result<(), String> {
    for (field, column) in wanted {
        match header.iter().filter(|h| h == column).count() {
            1 => continue,
            0 => {}
            n => {
                return Err(format!(
                    "the CSV header names column \"{column}\" ({field}) {n} times; which one is meant is ambiguous: rename the others"
                ));
            }
        }
        let shown: Vec<String> = header.iter().map(|h| format!("{h:?}")).collect();
        let mut message = format!(
            "the CSV header has no column \"{column}\" ({field}); the header is [{}]",
            shown.join(", ")
        );
        if let Some(hint) = nearest_column(header, column) {
            message.push_str("; ");
            message.push_str(&hint);
        }
        return Err(message);
    }
    Ok(())
}

fn nearest_column(header: &[String], column: &str) -> Option<String> {
    if let Some(h) = header.iter().find(|h| h.trim() == column) {
        return Some(format!(
            "column {h:?} differs only by spaces: set {column:?} to {h:?} or remove the spaces from the header"
        ));
    }
    if let Some(h) = header
        .iter()
        .find(|h| h.trim().eq_ignore_ascii_case(column))
    {
        return Some(format!(
            "column {h:?} differs only by case: column names are case-sensitive, use {h:?}"
        ));
    }
    if header.len() == 1 {
        for (delimiter, name) in [(';', "semicolons"), ('\t', "tabs"), ('|', "pipes")] {
            if header[0].contains(delimiter) {
                return Some(format!(
                    "the header looks separated by {name}, not commas: sluice reads comma-separated CSV; re-export it with commas"
                ));
            }
        }
    }
    header
        .iter()
        .map(|h| {
            (
                strsim::levenshtein(&h.to_lowercase(), &column.to_lowercase()),
                h,
            )
        })
        .filter(|(distance, _)| *distance <= 2.max(column.len() / 3))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, h)| format!("did you mean {h:?}?"))
}
