//! Loader for Open Bandit Dataset log files (Saito, Aihara, Matsutani, Narita 2020, "Open
//! Bandit Dataset and Pipeline", arXiv 2008.07146).
//!
//! Columns: an unnamed row index, `timestamp`, `item_id` (the action, 0-based), `position`
//! (1-based slot of the recommendation widget), `click` (the reward), `propensity_score` (the
//! logging policy's probability of this item in this position), `user_feature_*` (hashed
//! categorical strings) and `user-item_affinity_*` (floats, one per item). Positions become
//! 0-based in [`LoggedData`].
//!
//! The number of items is taken from `item_context.csv` beside the log when present, else from
//! the number of `user-item_affinity_*` columns (one per item), else from the largest item id.

use std::path::{Path, PathBuf};

use super::csv::for_each_record;
use super::{LoggedData, LoggedDataBuilder, LoggedRecord, OpeError};

/// Options of [`load_obd`].
#[derive(Debug, Clone, Default)]
pub struct ObdOptions {
    /// Number of items; `None` infers it (see the module docs).
    pub n_items: Option<usize>,
}

/// Loads an OBD log file.
pub fn load_obd(path: &Path, options: &ObdOptions) -> Result<LoggedData, OpeError> {
    let csv_error = |line: usize, message: String| OpeError::Csv { path: path.to_path_buf(), line, message };
    struct Columns {
        item: usize,
        position: usize,
        click: usize,
        propensity: usize,
        user: Vec<usize>,
        affinity: Vec<usize>,
    }
    let mut columns: Option<Columns> = None;
    let mut cat_names = Vec::new();
    let mut num_names = Vec::new();
    let mut cats: Vec<String> = Vec::new();
    let mut nums: Vec<f64> = Vec::new();
    let mut raw: Vec<(usize, usize, f64, f64)> = Vec::new();

    for_each_record(path, |line, fields| {
        let Some(cols) = &columns else {
            let find = |name: &str| {
                fields
                    .iter()
                    .position(|f| f.trim() == name)
                    .ok_or_else(|| csv_error(line, format!("missing column {name:?}")))
            };
            // Feature columns are ordered by their numeric suffix, not by file order.
            let numbered = |prefix: &str| {
                let mut found: Vec<(usize, usize)> = fields
                    .iter()
                    .enumerate()
                    .filter_map(|(j, f)| {
                        let k = f.trim().strip_prefix(prefix)?.parse::<usize>().ok()?;
                        Some((k, j))
                    })
                    .collect();
                found.sort_unstable();
                found
            };
            let user = numbered("user_feature_");
            let affinity = numbered("user-item_affinity_");
            cat_names = user.iter().map(|&(j, _)| format!("user_feature_{j}")).collect();
            num_names = affinity.iter().map(|&(j, _)| format!("user-item_affinity_{j}")).collect();
            columns = Some(Columns {
                item: find("item_id")?,
                position: find("position")?,
                click: find("click")?,
                propensity: find("propensity_score")?,
                user: user.into_iter().map(|(_, j)| j).collect(),
                affinity: affinity.into_iter().map(|(_, j)| j).collect(),
            });
            return Ok(());
        };
        let get = |j: usize, name: &str| {
            fields.get(j).map(|s| s.trim()).ok_or_else(|| csv_error(line, format!("row has no {name} field")))
        };
        let int = |j: usize, name: &str| {
            let s = get(j, name)?;
            s.parse::<usize>().map_err(|_| csv_error(line, format!("{name} {s:?} is not a non-negative integer")))
        };
        let float = |j: usize, name: &str| {
            let s = get(j, name)?;
            s.parse::<f64>().map_err(|_| csv_error(line, format!("{name} {s:?} is not a number")))
        };
        let item = int(cols.item, "item_id")?;
        let position = int(cols.position, "position")?;
        if position == 0 {
            return Err(csv_error(line, "position must be 1-based (1, 2, 3…)".into()));
        }
        let click = float(cols.click, "click")?;
        let propensity = float(cols.propensity, "propensity_score")?;
        for &j in &cols.user {
            cats.push(get(j, "user_feature")?.to_string());
        }
        for &j in &cols.affinity {
            nums.push(float(j, "user-item_affinity")?);
        }
        raw.push((item, position - 1, click, propensity));
        Ok(())
    })?;

    if columns.is_none() {
        return Err(csv_error(1, "empty file (no header)".into()));
    }
    if raw.is_empty() {
        return Err(OpeError::NotEnoughData { message: format!("{} has a header but no rows", path.display()) });
    }
    let max_item = raw.iter().map(|r| r.0).max().unwrap_or(0);
    let n_positions = raw.iter().map(|r| r.1).max().unwrap_or(0) + 1;
    let n_items = match options.n_items {
        Some(n) => n,
        None => match item_context_count(path)? {
            Some(n) => n,
            None if !num_names.is_empty() => num_names.len(),
            None => max_item + 1,
        },
    };
    let labels = (0..n_items).map(|a| a.to_string()).collect();
    let (n_cat, n_num) = (cat_names.len(), num_names.len());
    let mut builder = LoggedDataBuilder::new(labels, n_positions, cat_names, num_names)?;
    builder.reserve(raw.len());
    for (i, &(action, position, reward, propensity)) in raw.iter().enumerate() {
        builder.push(LoggedRecord {
            categorical: &cats[i * n_cat..(i + 1) * n_cat],
            numeric: &nums[i * n_num..(i + 1) * n_num],
            action,
            position,
            reward,
            propensity,
        })?;
    }
    builder.build()
}

/// Number of items listed in `item_context.csv` beside `log` (largest `item_id` + 1), if the
/// file exists.
fn item_context_count(log: &Path) -> Result<Option<usize>, OpeError> {
    let path: PathBuf = log.with_file_name("item_context.csv");
    if !path.is_file() {
        return Ok(None);
    }
    let mut item_col: Option<usize> = None;
    let mut count = 0usize;
    for_each_record(&path, |line, fields| {
        match item_col {
            None => {
                item_col = Some(fields.iter().position(|f| f.trim() == "item_id").ok_or_else(|| OpeError::Csv {
                    path: path.clone(),
                    line,
                    message: "missing column \"item_id\"".into(),
                })?);
            }
            Some(j) => {
                let s = fields.get(j).map(|s| s.trim()).unwrap_or("");
                let id = s.parse::<usize>().map_err(|_| OpeError::Csv {
                    path: path.clone(),
                    line,
                    message: format!("item_id {s:?} is not a non-negative integer"),
                })?;
                count = count.max(id + 1);
            }
        }
        Ok(())
    })?;
    Ok(Some(count))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `../shared/reference`, or `$STRATEGIST_REFERENCE_DIR`.
    pub(crate) fn reference_dir() -> PathBuf {
        match std::env::var_os("STRATEGIST_REFERENCE_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/reference")),
        }
    }

    pub(crate) fn obd(policy: &str, campaign: &str) -> LoggedData {
        let path = reference_dir().join("obd").join(policy).join(campaign).join(format!("{campaign}.csv"));
        load_obd(&path, &ObdOptions::default()).unwrap()
    }

    #[test]
    fn loads_random_all_with_its_known_facts() {
        let d = obd("random", "all");
        assert_eq!(d.len(), 10_000);
        assert_eq!(d.n_actions(), 80);
        assert_eq!(d.n_positions(), 3);
        assert_eq!(d.rewards().iter().sum::<f64>(), 38.0);
        assert_eq!(d.categorical_features().len(), 4);
        assert_eq!(d.numeric_feature_names().len(), 80);
        assert!(d.propensities().iter().all(|&p| p == 0.0125));
        assert_eq!(d.on_policy_value(), 0.0038);
    }

    #[test]
    fn loads_bts_men_with_34_items() {
        let d = obd("bts", "men");
        assert_eq!(d.n_actions(), 34);
        assert_eq!(d.len(), 10_000);
        assert_eq!(obd("bts", "all").rewards().iter().sum::<f64>(), 42.0);
    }

    #[test]
    fn reports_missing_columns_and_files() {
        let dir = std::env::temp_dir().join(format!("ope-obd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.csv");
        std::fs::write(&path, ",timestamp,item_id,position,click\n0,t,1,1,0\n").unwrap();
        let err = load_obd(&path, &ObdOptions::default()).unwrap_err();
        assert_eq!(err.code(), "ope_csv");
        assert!(err.to_string().contains("propensity_score"));
        let err = load_obd(&dir.join("absent.csv"), &ObdOptions::default()).unwrap_err();
        assert_eq!(err.code(), "ope_io");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
