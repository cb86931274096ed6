//! The Kubernetes manifests in `deploy/kubernetes/` hold up: every pod
//! passes the Pod Security "restricted" profile field by field, probes use
//! the gRPC health service, the image is pinned to a version, a disruption
//! budget and a migration Job exist, and the config map is a config file
//! `userdir serve` accepts. (CI also runs checkov and hadolint over
//! `deploy/`, .ci/lint-deploy.sh.)

use std::path::Path;

use yaml_rust2::{Yaml, YamlLoader};

fn documents() -> Vec<(String, Yaml)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes");
    let mut docs = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display())) {
            let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
            docs.push((format!("{} {kind}", file.file_name().unwrap().to_string_lossy()), doc));
        }
    }
    docs
}

fn of_kind<'a>(docs: &'a [(String, Yaml)], kind: &str) -> Vec<&'a (String, Yaml)> {
    docs.iter().filter(|(_, d)| d["kind"].as_str() == Some(kind)).collect()
}

fn list(y: &Yaml) -> &[Yaml] {
    y.as_vec().map_or(&[], Vec::as_slice)
}

/// A setting of the container, else of the pod (the container's wins).
fn effective<'a>(pod: &'a Yaml, container: &'a Yaml, key: &str) -> &'a Yaml {
    let own = &container["securityContext"][key];
    if own.is_badvalue() || own.is_null() {
        &pod["securityContext"][key]
    } else {
        own
    }
}

/// The "restricted" profile (Kubernetes Pod Security Standards, v1.30),
/// each of its controls, for one pod spec.
fn assert_restricted(name: &str, pod: &Yaml) {
    for host in ["hostNetwork", "hostPID", "hostIPC"] {
        assert_ne!(pod[host].as_bool(), Some(true), "{name}: {host}");
    }
    const VOLUMES: [&str; 8] = [
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    ];
    for volume in list(&pod["volumes"]) {
        let kinds: Vec<&str> = volume
            .as_hash()
            .unwrap()
            .keys()
            .filter_map(Yaml::as_str)
            .filter(|k| *k != "name")
            .collect();
        assert!(
            kinds.iter().all(|k| VOLUMES.contains(k)),
            "{name}: volume types {kinds:?}"
        );
    }
    let containers: Vec<&Yaml> = list(&pod["containers"])
        .iter()
        .chain(list(&pod["initContainers"]))
        .collect();
    assert!(!containers.is_empty(), "{name}: no containers");
    for c in containers {
        let cname = format!("{name}/{}", c["name"].as_str().unwrap_or("?"));
        assert_eq!(
            effective(pod, c, "runAsNonRoot").as_bool(),
            Some(true),
            "{cname}: runAsNonRoot"
        );
        let uid = effective(pod, c, "runAsUser").as_i64();
        assert!(uid.is_some_and(|u| u >= 10000), "{cname}: runAsUser {uid:?}");
        assert_eq!(
            c["securityContext"]["allowPrivilegeEscalation"].as_bool(),
            Some(false),
            "{cname}: allowPrivilegeEscalation"
        );
        assert_ne!(
            c["securityContext"]["privileged"].as_bool(),
            Some(true),
            "{cname}: privileged"
        );
        let drop: Vec<&str> = list(&c["securityContext"]["capabilities"]["drop"])
            .iter()
            .filter_map(Yaml::as_str)
            .collect();
        assert!(drop.contains(&"ALL"), "{cname}: capabilities.drop {drop:?}");
        let add: Vec<&str> = list(&c["securityContext"]["capabilities"]["add"])
            .iter()
            .filter_map(Yaml::as_str)
            .collect();
        assert!(
            add.iter().all(|a| *a == "NET_BIND_SERVICE"),
            "{cname}: capabilities.add {add:?}"
        );
        let seccomp = effective(pod, c, "seccompProfile")["type"].as_str();
        assert!(
            matches!(seccomp, Some("RuntimeDefault" | "Localhost")),
            "{cname}: seccompProfile {seccomp:?}"
        );
        for port in list(&c["ports"]) {
            assert!(port["hostPort"].is_badvalue(), "{cname}: hostPort");
        }
        // Beyond the profile: what this issue asks of every container.
        assert_eq!(
            c["securityContext"]["readOnlyRootFilesystem"].as_bool(),
            Some(true),
            "{cname}: readOnlyRootFilesystem"
        );
        let image = c["image"].as_str().unwrap_or_default();
        let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or_default();
        assert!(
            !tag.is_empty() && tag != "latest" && !tag.contains('/'),
            "{cname}: image {image:?} must name a version"
        );
        assert!(
            !c["resources"]["limits"]["memory"].is_badvalue(),
            "{cname}: memory limit"
        );
    }
    assert_eq!(
        pod["automountServiceAccountToken"].as_bool(),
        Some(false),
        "{name}: no service account token"
    );
}

#[test]
fn every_pod_passes_the_restricted_profile() {
    let docs = documents();
    let mut pods = 0;
    for (name, doc) in &docs {
        if matches!(
            doc["kind"].as_str(),
            Some("Deployment" | "Job" | "StatefulSet" | "DaemonSet")
        ) {
            assert_restricted(name, &doc["spec"]["template"]["spec"]);
            pods += 1;
        }
    }
    assert_eq!(pods, 2, "the Deployment and the migration Job");
    for (name, account) in of_kind(&docs, "ServiceAccount") {
        assert_eq!(account["automountServiceAccountToken"].as_bool(), Some(false), "{name}");
    }
}

#[test]
fn the_deployment_is_probed_budgeted_and_migrated_first() {
    let docs = documents();
    let deployments = of_kind(&docs, "Deployment");
    let (_, deployment) = deployments.first().expect("a Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    for probe in ["readinessProbe", "livenessProbe"] {
        assert!(
            !container[probe]["grpc"]["port"].is_badvalue(),
            "{probe} uses the gRPC health service"
        );
    }
    assert_eq!(container["livenessProbe"]["grpc"]["service"].as_str(), Some("liveness"));
    assert!(
        deployment["spec"]["replicas"].as_i64().unwrap_or(1) >= 2,
        "several replicas for the disruption budget to matter"
    );
    let budgets = of_kind(&docs, "PodDisruptionBudget");
    let (_, budget) = budgets.first().expect("a PodDisruptionBudget");
    assert_eq!(
        budget["spec"]["selector"]["matchLabels"], deployment["spec"]["selector"]["matchLabels"],
        "the budget covers the Deployment's pods"
    );
    let jobs = of_kind(&docs, "Job");
    let (_, job) = jobs.first().expect("a migration Job");
    let args: Vec<&str> = list(&job["spec"]["template"]["spec"]["containers"][0]["args"])
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert_eq!(args.first(), Some(&"migrate"), "{args:?}");
    let env: Vec<&str> = list(&container["env"])
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert!(env.contains(&"OTEL_EXPORTER_OTLP_ENDPOINT"), "{env:?}");
    let mounts: Vec<&str> = list(&pod["volumes"])
        .iter()
        .filter_map(|v| v["secret"]["secretName"].as_str())
        .collect();
    assert!(mounts.contains(&"userdir-tls"), "TLS from a Secret: {mounts:?}");
}

/// The ConfigMap's userdir.toml is a config file `userdir serve` accepts,
/// with TLS on and migrations left to the Job.
#[test]
fn the_config_map_is_a_valid_config_file() {
    let docs = documents();
    let maps = of_kind(&docs, "ConfigMap");
    let (_, map) = maps.first().expect("a ConfigMap");
    let toml = map["data"]["userdir.toml"].as_str().expect("userdir.toml");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("userdir.toml");
    std::fs::write(&file, toml).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_userdir"))
        .args(["serve", "--config", &file.display().to_string(), "--print-config"])
        .env_remove("USERDIR_LISTEN")
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(shown.contains("no_migrate: true"), "{shown}");
    assert!(shown.contains("tls_cert: Some("), "{shown}");
    assert!(shown.contains("health_listen: Some("), "{shown}");
}
