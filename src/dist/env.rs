//! Where this process sits in the job: torchrun's environment, Slurm's, or neither.

use std::collections::HashMap;

/// The rendezvous coordinates of one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub rank: usize,
    pub world: usize,
    pub local_rank: usize,
    pub master_addr: String,
    pub master_port: u16,
    /// torchrun's agent already hosts the TCPStore at MASTER_PORT
    /// (`TORCHELASTIC_USE_AGENT_STORE=True`), so rank 0 joins it as a client, as torch's
    /// env:// initialisation does.
    pub agent_store: bool,
    /// Which launcher set the variables (for messages).
    pub launcher: &'static str,
}

/// The port Slurm jobs use when MASTER_PORT is not set (torch's default).
pub const DEFAULT_PORT: u16 = 29500;

/// Reads the launch from `vars`: torchrun's RANK/WORLD_SIZE first, then Slurm's
/// SLURM_PROCID/SLURM_NTASKS. `Ok(None)` when neither is there: a single process.
pub fn launch_from(vars: &HashMap<String, String>) -> Result<Option<Launch>, String> {
    let get = |k: &str| vars.get(k).map(|v| v.trim().to_owned());
    let num = |k: &str| -> Result<Option<usize>, String> {
        get(k)
            .map(|v| {
                v.parse::<usize>()
                    .map_err(|_| format!("{k}={v:?} is not a non-negative integer"))
            })
            .transpose()
    };
    let port = || -> Result<u16, String> {
        match get("MASTER_PORT") {
            Some(p) => p
                .parse()
                .map_err(|_| format!("MASTER_PORT={p:?} is not a port number")),
            None => Ok(DEFAULT_PORT),
        }
    };
    let (rank, world, local_rank, master_addr, launcher) =
        if let (Some(rank), Some(world)) = (num("RANK")?, num("WORLD_SIZE")?) {
            let addr =
                get("MASTER_ADDR").ok_or("RANK and WORLD_SIZE are set but MASTER_ADDR is not")?;
            if get("MASTER_PORT").is_none() {
                return Err("RANK and WORLD_SIZE are set but MASTER_PORT is not".into());
            }
            (
                rank,
                world,
                num("LOCAL_RANK")?.unwrap_or(0),
                addr,
                "torchrun",
            )
        } else if let (Some(rank), Some(world)) = (num("SLURM_PROCID")?, num("SLURM_NTASKS")?) {
            let addr = match get("MASTER_ADDR") {
                Some(a) => a,
                None => {
                    let list = get("SLURM_STEP_NODELIST")
                        .or_else(|| get("SLURM_JOB_NODELIST"))
                        .or_else(|| get("SLURM_NODELIST"))
                        .ok_or("SLURM_PROCID is set but no SLURM_*NODELIST names the hosts")?;
                    first_host(&list)?
                }
            };
            (
                rank,
                world,
                num("SLURM_LOCALID")?.unwrap_or(0),
                addr,
                "slurm",
            )
        } else {
            return Ok(None);
        };
    if world == 0 || rank >= world {
        return Err(format!(
            "rank {rank} is outside a world of size {world} ({launcher})"
        ));
    }
    let agent_store = get("TORCHELASTIC_USE_AGENT_STORE").as_deref() == Some("True");
    Ok(Some(Launch {
        rank,
        world,
        local_rank,
        master_addr,
        master_port: port()?,
        agent_store,
        launcher,
    }))
}

/// The first host of a Slurm node list: `node[003-005,9],gpu1` → `node003` (zero padding kept).
pub fn first_host(list: &str) -> Result<String, String> {
    let list = list.trim();
    let bad = || format!("cannot read the Slurm node list {list:?}");
    // The first entry ends at the first comma outside brackets.
    let mut depth = 0;
    let end = list
        .char_indices()
        .find(|&(_, c)| {
            match c {
                '[' => depth += 1,
                ']' => depth -= 1,
                _ => {}
            }
            c == ',' && depth == 0
        })
        .map_or(list.len(), |(i, _)| i);
    let first = &list[..end];
    let Some(open) = first.find('[') else {
        return if first.is_empty() {
            Err(bad())
        } else {
            Ok(first.to_owned())
        };
    };
    let close = first[open..].find(']').ok_or_else(bad)? + open;
    let (prefix, inner, suffix) = (&first[..open], &first[open + 1..close], &first[close + 1..]);
    let range = inner.split(',').next().ok_or_else(bad)?;
    let lo = range.split('-').next().ok_or_else(bad)?;
    if lo.is_empty() || !lo.chars().all(|c| c.is_ascii_digit()) || suffix.contains('[') {
        return Err(bad());
    }
    Ok(format!("{prefix}{lo}{suffix}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn no_launcher_is_a_single_process() {
        assert_eq!(launch_from(&vars(&[("PATH", "/bin")])), Ok(None));
    }

    #[test]
    fn torchrun_variables() {
        let l = launch_from(&vars(&[
            ("RANK", "3"),
            ("WORLD_SIZE", "4"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "10.0.0.2"),
            ("MASTER_PORT", "29400"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            (
                l.rank,
                l.world,
                l.local_rank,
                l.master_addr.as_str(),
                l.master_port,
                l.agent_store
            ),
            (3, 4, 1, "10.0.0.2", 29400, true)
        );
    }

    #[test]
    fn slurm_variables_take_the_first_node() {
        let l = launch_from(&vars(&[
            ("SLURM_PROCID", "5"),
            ("SLURM_NTASKS", "8"),
            ("SLURM_LOCALID", "1"),
            ("SLURM_JOB_NODELIST", "gpu-[007-009,12],cpu1"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!((l.rank, l.world, l.local_rank), (5, 8, 1));
        assert_eq!(
            (l.master_addr.as_str(), l.master_port),
            ("gpu-007", DEFAULT_PORT)
        );
        assert!(!l.agent_store);
    }

    #[test]
    fn node_lists() {
        assert_eq!(first_host("node1").unwrap(), "node1");
        assert_eq!(first_host("node1,node2").unwrap(), "node1");
        assert_eq!(first_host("n[2-4]").unwrap(), "n2");
        assert_eq!(first_host("n[0010,3]x").unwrap(), "n0010x");
        assert!(first_host("n[a-b]").is_err());
        assert!(first_host("").is_err());
    }

    #[test]
    fn bad_values_are_errors() {
        assert!(launch_from(&vars(&[("RANK", "x"), ("WORLD_SIZE", "2")])).is_err());
        assert!(launch_from(&vars(&[
            ("RANK", "2"),
            ("WORLD_SIZE", "2"),
            ("MASTER_ADDR", "a"),
            ("MASTER_PORT", "1")
        ]))
        .is_err());
        assert!(launch_from(&vars(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "2"),
            ("MASTER_PORT", "1")
        ]))
        .is_err());
    }
}
