//! A Helm chart's files for its artifact page: `<name>/Chart.yaml` and `<name>/README.md`
//! out of the chart layer (`application/vnd.cncf.helm.chart.content.v1.tar.gz`), read with
//! bounds everywhere (compressed size is the caller's, unpacked bytes, entries, file sizes),
//! since the archive is whatever a client pushed.

use std::io::Read;

/// The media type of a Helm chart's config; an artifact with it is a chart.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.cncf.helm.config.v1+json";
/// The media type of the chart layer (the packaged `.tgz`).
pub const CHART_MEDIA_TYPE: &str = "application/vnd.cncf.helm.chart.content.v1.tar.gz";

/// Unpacked bytes read from an archive at most.
const MAX_UNPACKED: u64 = 64 << 20;
/// Archive entries looked at at most.
const MAX_ENTRIES: usize = 10_000;
const MAX_CHART_YAML: u64 = 64 << 10;
const MAX_README: u64 = 256 << 10;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct ChartFiles {
    pub chart_yaml: Option<String>,
    pub readme: Option<String>,
    /// Whether a file was cut at its size limit.
    pub truncated: bool,
}

/// Finds `<name>/Chart.yaml` and `<name>/README.md` (top-level directory only) in a chart
/// archive.
pub fn read_chart(tgz: &[u8]) -> Result<ChartFiles, String> {
    let unpacked = flate2::read::GzDecoder::new(tgz).take(MAX_UNPACKED);
    let mut archive = tar::Archive::new(unpacked);
    let mut files = ChartFiles::default();
    let entries = archive.entries().map_err(|e| e.to_string())?;
    for entry in entries.take(MAX_ENTRIES) {
        let mut entry = entry.map_err(|e| e.to_string())?;
        let path = entry.path().map_err(|e| e.to_string())?;
        let path = path.to_string_lossy();
        let path = path.strip_prefix("./").unwrap_or(&path);
        let Some((dir, file)) = path.split_once('/') else {
            continue;
        };
        if dir.is_empty() || file.contains('/') {
            continue;
        }
        let (slot, cap) = if file == "Chart.yaml" {
            (&mut files.chart_yaml, MAX_CHART_YAML)
        } else if file.eq_ignore_ascii_case("README.md") {
            (&mut files.readme, MAX_README)
        } else {
            continue;
        };
        if slot.is_some() {
            continue;
        }
        let mut bytes = Vec::new();
        (&mut entry)
            .take(cap + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| e.to_string())?;
        if bytes.len() as u64 > cap {
            bytes.truncate(cap as usize);
            files.truncated = true;
        }
        *slot = Some(String::from_utf8_lossy(&bytes).into_owned());
        if files.chart_yaml.is_some() && files.readme.is_some() {
            break;
        }
    }
    Ok(files)
}

/// The keys of Chart.yaml shown on the page, in this order.
const SHOWN: [&str; 10] = [
    "name",
    "version",
    "appVersion",
    "description",
    "type",
    "apiVersion",
    "kubeVersion",
    "home",
    "icon",
    "deprecated",
];

/// The top-level scalar fields of a Chart.yaml among [`SHOWN`], in that order. Only
/// `key: value` lines at column 0 are read (lists and maps such as `maintainers` and
/// `dependencies` are left to the file itself, which the page also shows).
pub fn chart_fields(yaml: &str) -> Vec<(&'static str, String)> {
    let mut found: Vec<(&'static str, String)> = Vec::new();
    for line in yaml.lines().take(2_000) {
        if line.starts_with([' ', '\t', '#', '-']) {
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let Some(shown) = SHOWN.iter().find(|k| **k == key.trim()) else {
            continue;
        };
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(value);
        if value.is_empty() || found.iter().any(|(k, _)| k == shown) {
            continue;
        }
        found.push((shown, value.to_string()));
    }
    found.sort_by_key(|(k, _)| SHOWN.iter().position(|s| s == k));
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tgz(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, data) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder
                .append_data(&mut header, path, *data)
                .expect("append");
        }
        let tar = builder.into_inner().expect("tar");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).expect("gzip");
        gz.finish().expect("gzip")
    }

    #[test]
    fn chart_yaml_and_readme_are_found_in_the_top_directory() {
        let archive = tgz(&[
            ("demo/templates/README.md", b"not this one"),
            (
                "demo/Chart.yaml",
                b"apiVersion: v2\nname: demo\nversion: 0.1.0\n",
            ),
            ("demo/README.md", b"# Demo"),
        ]);
        let files = read_chart(&archive).expect("chart");
        assert_eq!(
            files.chart_yaml.as_deref(),
            Some("apiVersion: v2\nname: demo\nversion: 0.1.0\n")
        );
        assert_eq!(files.readme.as_deref(), Some("# Demo"));
        assert!(!files.truncated);
    }

    #[test]
    fn large_files_are_cut_and_garbage_is_an_error() {
        let big = vec![b'a'; (MAX_README + 10) as usize];
        let files = read_chart(&tgz(&[("demo/README.md", &big)])).expect("chart");
        assert_eq!(files.readme.map(|r| r.len() as u64), Some(MAX_README));
        assert!(files.truncated);
        assert!(read_chart(b"not gzip at all").is_err());
    }

    #[test]
    fn chart_fields_reads_top_level_scalars_in_a_fixed_order() {
        let fields = chart_fields(
            "# comment\nversion: \"1.2.3\"\nname: demo\nmaintainers:\n  - name: someone\ndescription: 'A chart'\nappVersion: 4.5\n",
        );
        assert_eq!(
            fields,
            vec![
                ("name", "demo".to_string()),
                ("version", "1.2.3".to_string()),
                ("appVersion", "4.5".to_string()),
                ("description", "A chart".to_string()),
            ]
        );
    }
}
