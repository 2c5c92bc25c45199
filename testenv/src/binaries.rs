//! Finds (or builds, once) the real binaries and manifests the control plane runs on.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::Deserialize;

use crate::TestEnvError;

/// The Kubernetes version the harness builds when `KUBE_APISERVER` is not set.
pub const KUBE_VERSION: &str = "v1.37.2";
/// The Gateway API release whose standard-channel CRDs are installed.
pub const GATEWAY_API_VERSION: &str = "v1.6.3";
/// The Traefik release `hack/build-traefik.sh` builds when `TRAEFIK` is not set.
pub const TRAEFIK_VERSION: &str = "v3.6.12";

/// The kube-apiserver to run: `$KUBE_APISERVER`, or the cached build of [`KUBE_VERSION`],
/// built now by `hack/build-kube.sh` if it is not cached yet.
pub fn kube_apiserver() -> Result<PathBuf, TestEnvError> {
    kube_command("kube-apiserver", "KUBE_APISERVER")
}

/// The kubectl to run: `$KUBECTL`, or the cached build of [`KUBE_VERSION`], built now
/// by `hack/build-kube.sh` if it is not cached yet.
pub fn kubectl() -> Result<PathBuf, TestEnvError> {
    kube_command("kubectl", "KUBECTL")
}

/// `command` of the k8s.io/kubernetes module: `$<variable>`, or its cached build.
fn kube_command(command: &str, variable: &str) -> Result<PathBuf, TestEnvError> {
    if let Some(path) = std::env::var_os(variable) {
        return existing(PathBuf::from(path), variable);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hack/build-kube.sh");
    let output = Command::new("bash")
        .arg(&script)
        .arg(command)
        .env("KUBE_VERSION", KUBE_VERSION)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|source| TestEnvError::Spawn {
            program: script.display().to_string(),
            source,
        })?;
    if !output.status.success() {
        return Err(TestEnvError::Build {
            what: format!("{command} {KUBE_VERSION}"),
            detail: format!("{} exited with {}", script.display(), output.status),
        });
    }
    let path = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    existing(PathBuf::from(path), &format!("the {command} build"))
}

/// The etcd to run: `$ETCD`, or the binary vendored by the `etcd-bin-vendored` crate.
pub fn etcd() -> Result<PathBuf, TestEnvError> {
    if let Some(path) = std::env::var_os("ETCD") {
        return existing(PathBuf::from(path), "ETCD");
    }
    etcd_bin_vendored::etcd_bin_path()
        .map(Path::to_path_buf)
        .map_err(|err| TestEnvError::Build {
            what: "etcd".into(),
            detail: err.to_string(),
        })
}

fn existing(path: PathBuf, from: &str) -> Result<PathBuf, TestEnvError> {
    if path.is_file() {
        Ok(path)
    } else {
        Err(TestEnvError::Build {
            what: path.display().to_string(),
            detail: format!("{from} names a file that does not exist"),
        })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ModuleDownload {
    dir: Option<String>,
    error: Option<String>,
}

/// The standard-channel Gateway API CRDs of [`GATEWAY_API_VERSION`], read from
/// `config/crd/standard/` of the `sigs.k8s.io/gateway-api` Go module (downloaded into the
/// Go module cache, which is the cache).
pub fn gateway_api_crds() -> Result<Vec<CustomResourceDefinition>, TestEnvError> {
    let module = format!("sigs.k8s.io/gateway-api@{GATEWAY_API_VERSION}");
    let output = Command::new("go")
        .args(["mod", "download", "-json", &module])
        .current_dir(std::env::temp_dir())
        .env("GOFLAGS", "-mod=mod")
        .output()
        .map_err(|source| TestEnvError::Spawn {
            program: "go".into(),
            source,
        })?;
    let download: ModuleDownload =
        serde_json::from_slice(&output.stdout).map_err(|err| TestEnvError::Build {
            what: module.clone(),
            detail: format!(
                "go mod download printed no module description ({err}): {}",
                String::from_utf8_lossy(&output.stderr)
            ),
        })?;
    let dir = match (download.dir, download.error) {
        (Some(dir), None) => PathBuf::from(dir).join("config/crd/standard"),
        (_, error) => {
            return Err(TestEnvError::Build {
                what: module,
                detail: error.unwrap_or_else(|| "no directory reported".into()),
            });
        }
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|source| TestEnvError::Io {
            path: dir.clone(),
            source,
        })?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    let mut crds = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|source| TestEnvError::Io {
            path: file.clone(),
            source,
        })?;
        crds.extend(crds_in_yaml(&text).map_err(|err| TestEnvError::Manifest {
            path: file.clone(),
            detail: err.to_string(),
        })?);
    }
    Ok(crds)
}

/// The CustomResourceDefinitions in a multi-document YAML stream; other kinds are skipped.
pub fn crds_in_yaml(text: &str) -> Result<Vec<CustomResourceDefinition>, serde_yaml::Error> {
    let mut crds = Vec::new();
    for document in serde_yaml::Deserializer::from_str(text) {
        let value = serde_yaml::Value::deserialize(document)?;
        if value.get("kind").and_then(serde_yaml::Value::as_str) == Some("CustomResourceDefinition")
        {
            crds.push(serde_yaml::from_value(value)?);
        }
    }
    Ok(crds)
}

/// The Traefik to run for a [`crate::DataPlane`]: `$TRAEFIK`, or the cached build of
/// `hack/build-traefik.sh` (v3.6.12), built now if it is not cached yet.
pub fn traefik() -> Result<PathBuf, TestEnvError> {
    if let Some(path) = std::env::var_os("TRAEFIK") {
        return existing(PathBuf::from(path), "TRAEFIK");
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hack/build-traefik.sh");
    let output = Command::new("bash")
        .arg(&script)
        .env("TRAEFIK_VERSION", TRAEFIK_VERSION)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|source| TestEnvError::Spawn {
            program: script.display().to_string(),
            source,
        })?;
    if !output.status.success() {
        return Err(TestEnvError::Build {
            what: format!("traefik {TRAEFIK_VERSION}"),
            detail: format!("{} exited with {}", script.display(), output.status),
        });
    }
    let path = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    existing(PathBuf::from(path), "the traefik build")
}
