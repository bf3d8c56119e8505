//! The report of a suite of checks run outside libtest (`harness = false`): one line per check in
//! libtest's shape (`test NAME ... ok|FAILED`, then `test result: ...`, which scripts/test.sh
//! counts), and with `CONFORMANCE_SUMMARY=FILE` the TSV that conformance/table.sh reads.

use std::any::Any;
use std::sync::Mutex;
use std::time::Instant;

/// One check: a row of the conformance table's summary.
pub struct Row {
    pub runtime: String,
    pub version: String,
    pub verb: String,
    pub case: String,
    pub result: Result<(), String>,
}

impl Row {
    pub fn new(
        runtime: &str,
        version: &str,
        verb: &str,
        case: &str,
        result: Result<(), String>,
    ) -> Row {
        Row {
            runtime: runtime.into(),
            version: version.into(),
            verb: verb.into(),
            case: case.into(),
            result,
        }
    }

    pub fn name(&self) -> String {
        format!(
            "{} {} {} {}",
            self.runtime, self.version, self.verb, self.case
        )
    }
}

/// The checks of one run, recorded from any thread.
pub struct Checks {
    rows: Mutex<Vec<Row>>,
    started: Instant,
}

impl Default for Checks {
    fn default() -> Self {
        Checks {
            rows: Mutex::new(Vec::new()),
            started: Instant::now(),
        }
    }
}

impl Checks {
    pub fn record(&self, row: Row) {
        let status = if row.result.is_ok() { "ok" } else { "FAILED" };
        println!("test {} ... {status}", row.name());
        self.rows
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(row);
    }

    /// A part of the suite that panicked: one failed check named `what`.
    pub fn record_panic(&self, what: &str, panic: Box<dyn Any + Send>) {
        let why = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        self.record(Row::new(
            "setup",
            "-",
            "-",
            what,
            Err(format!("panicked: {why}")),
        ));
    }

    /// Prints the failures and the result line, writes the summary, and exits 101 if any failed.
    pub fn finish(self, filtered_out: usize) {
        let rows = self.rows.into_inner().unwrap_or_else(|p| p.into_inner());
        let failed: Vec<&Row> = rows.iter().filter(|r| r.result.is_err()).collect();
        if !failed.is_empty() {
            println!("\nfailures:");
            for r in &failed {
                println!("    {}: {}", r.name(), r.result.as_ref().unwrap_err());
            }
        }
        if let Some(file) = std::env::var_os("CONFORMANCE_SUMMARY") {
            let mut tsv = String::from("runtime\tversion\tverb\tcase\tresult\n");
            for r in &rows {
                let result = if r.result.is_ok() { "pass" } else { "FAIL" };
                tsv += &format!(
                    "{}\t{}\t{}\t{}\t{result}\n",
                    r.runtime, r.version, r.verb, r.case
                );
            }
            std::fs::write(&file, tsv).expect("write CONFORMANCE_SUMMARY");
        }
        println!(
            "\ntest result: {}. {} passed; {} failed; 0 ignored; 0 measured; {filtered_out} filtered out; finished in {:.2}s\n",
            if failed.is_empty() { "ok" } else { "FAILED" },
            rows.len() - failed.len(),
            failed.len(),
            self.started.elapsed().as_secs_f64()
        );
        if !failed.is_empty() {
            std::process::exit(101);
        }
    }
}
