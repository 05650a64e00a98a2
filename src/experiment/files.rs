//! Experiment definition files: `experiments/*.toml`. Loading reads every file of a folder
//! (or one file) and reports each problem with its file, field and reason.

use std::path::{Path, PathBuf};

use super::definition::{from_toml, Definition};

#[derive(Debug, Clone, PartialEq)]
pub struct FileProblem {
    pub file: PathBuf,
    pub field: String,
    pub reason: String,
}

impl std::fmt::Display for FileProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.reason)
        } else {
            write!(f, "{}: {}: {}", self.file.display(), self.field, self.reason)
        }
    }
}

/// The `.toml` files at `path` (a file, or a folder read non-recursively), sorted.
pub fn definition_files(path: &Path) -> Result<Vec<PathBuf>, FileProblem> {
    let problem = |reason: String| FileProblem { file: path.to_path_buf(), field: String::new(), reason };
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let rd = std::fs::read_dir(path).map_err(|e| problem(format!("cannot read: {e}")))?;
    let mut files: Vec<PathBuf> =
        rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "toml")).collect();
    files.sort();
    if files.is_empty() {
        return Err(problem("no .toml experiment definitions here".into()));
    }
    Ok(files)
}

/// Parses and validates every definition; returns them all, or every problem found.
pub fn load_definitions(path: &Path) -> Result<Vec<(PathBuf, Definition)>, Vec<FileProblem>> {
    let files = definition_files(path).map_err(|p| vec![p])?;
    let mut defs = Vec::new();
    let mut problems = Vec::new();
    for file in files {
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) => {
                problems.push(FileProblem { file, field: String::new(), reason: format!("cannot read: {e}") });
                continue;
            }
        };
        match from_toml(&text) {
            Err(reason) => problems.push(FileProblem { file, field: String::new(), reason: reason.trim().to_string() }),
            Ok(def) => {
                let errs = def.validate();
                if errs.is_empty() {
                    defs.push((file, def));
                } else {
                    problems.extend(errs.into_iter().map(|e| FileProblem {
                        file: file.clone(),
                        field: e.field,
                        reason: e.reason,
                    }));
                }
            }
        }
    }
    let mut keys = std::collections::HashMap::new();
    for (file, def) in &defs {
        if let Some(other) = keys.insert(def.key.clone(), file.clone()) {
            problems.push(FileProblem {
                file: file.clone(),
                field: "key".into(),
                reason: format!("`{}` is also defined in {}", def.key, other.display()),
            });
        }
    }
    if problems.is_empty() {
        Ok(defs)
    } else {
        Err(problems)
    }
}
