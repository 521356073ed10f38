package dev.limactl.train;

import java.nio.file.Path;
import java.util.Map;

/**
 * This process's place in a training job, read from the variables cluster launchers set: torchrun
 * (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), Slurm (SLURM_PROCID, SLURM_NTASKS,
 * SLURM_LOCALID, SLURM_JOB_ID) or Open MPI (OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_SIZE,
 * OMPI_COMM_WORLD_LOCAL_RANK); none of them: one process. The rendezvous is the config's, else
 * LIMACTL_RENDEZVOUS, else a directory of the run named by the job (every rank of a multi-node job
 * sees the run directory on shared storage).
 */
public record Placement(int rank, int world, int localRank, String launcher, String jobId) {
    public static final Placement SINGLE = new Placement(0, 1, 0, "single process", "");

    public boolean distributed() {
        return world > 1;
    }

    public static Placement fromEnvironment(Map<String, String> env) {
        if (env.containsKey("RANK") && env.containsKey("WORLD_SIZE")) {
            return of(env, "RANK", "WORLD_SIZE", "LOCAL_RANK", "torchrun-style variables",
                    env.getOrDefault("TORCHELASTIC_RUN_ID", env.getOrDefault("MASTER_ADDR", "local") + "-" + env.getOrDefault("MASTER_PORT", "0")));
        }
        if (env.containsKey("OMPI_COMM_WORLD_RANK") && env.containsKey("OMPI_COMM_WORLD_SIZE")) {
            return of(env, "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "Open MPI",
                    env.getOrDefault("OMPI_MCA_orte_ess_jobid", env.getOrDefault("OMPI_MCA_ess_base_jobid", "ompi")));
        }
        if (env.containsKey("SLURM_PROCID") && env.containsKey("SLURM_NTASKS")) {
            return of(env, "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "Slurm",
                    env.getOrDefault("SLURM_JOB_ID", "slurm") + "." + env.getOrDefault("SLURM_STEP_ID", "0"));
        }
        return SINGLE;
    }

    private static Placement of(Map<String, String> env, String rankKey, String worldKey, String localKey, String launcher, String job) {
        int rank = number(env, rankKey), world = number(env, worldKey);
        int local = env.containsKey(localKey) ? number(env, localKey) : rank;
        if (world < 1) throw new IllegalArgumentException(worldKey + "=" + world + ": the world size must be >= 1");
        if (rank < 0 || rank >= world) throw new IllegalArgumentException(rankKey + "=" + rank + " is not a rank of " + worldKey + "=" + world);
        return new Placement(rank, world, local, launcher, job.replaceAll("[^A-Za-z0-9._-]", "_"));
    }

    private static int number(Map<String, String> env, String key) {
        String v = env.get(key);
        try {
            return Integer.parseInt(v.trim());
        } catch (NumberFormatException | NullPointerException e) {
            throw new IllegalArgumentException("environment variable " + key + "=\"" + v + "\" is not an integer");
        }
    }

    /** The rendezvous: the configured one, else LIMACTL_RENDEZVOUS, else file:RUN/rendezvous/JOB. */
    public String rendezvous(String configured, Map<String, String> env, Path runDir) {
        if (configured != null && !configured.isEmpty()) return configured;
        String fromEnv = env.get("LIMACTL_RENDEZVOUS");
        if (fromEnv != null && !fromEnv.isEmpty()) return fromEnv;
        return "file:" + runDir.toAbsolutePath().resolve("rendezvous").resolve(jobId.isEmpty() ? "job" : jobId);
    }
}
