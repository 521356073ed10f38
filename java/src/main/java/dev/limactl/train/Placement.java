package dev.limactl.train;

import java.nio.file.Path;
import java.util.Map;

/**
 * This process's place in a training job, read from the variables cluster launchers set: torchrun
 * (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), Slurm (SLURM_PROCID, SLURM_NTASKS,
 * SLURM_LOCALID, SLURM_JOB_ID) or Open MPI (OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_SIZE,
 * OMPI_COMM_WORLD_LOCAL_RANK); none of them: one process. The rendezvous is the config's, else
 * LIMACTL_RENDEZVOUS, else rank 0's key-value server at MASTER_ADDR:MASTER_PORT, else a directory of
 * the run named by the job (every rank of a multi-node job sees the run directory on shared storage).
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

    /**
     * The rendezvous: the configured one, else LIMACTL_RENDEZVOUS, else a key-value server that rank 0
     * hosts at MASTER_ADDR:MASTER_PORT ({@code tcp://HOST:PORT/JOB}; under Slurm MASTER_ADDR defaults to
     * the first host of SLURM_JOB_NODELIST and MASTER_PORT to 20000 + the job id mod 20000; under
     * torchrun, whose agent already serves MASTER_PORT, the port after it), else file:RUN/rendezvous/JOB.
     */
    public String rendezvous(String configured, Map<String, String> env, Path runDir) {
        if (configured != null && !configured.isEmpty()) return configured;
        String fromEnv = env.get("LIMACTL_RENDEZVOUS");
        if (fromEnv != null && !fromEnv.isEmpty()) return fromEnv;
        String job = jobId.isEmpty() ? "job" : jobId;
        String addr = env.get("MASTER_ADDR"), port = env.get("MASTER_PORT");
        if (launcher.equals("Slurm")) {
            if (addr == null || addr.isBlank()) addr = firstSlurmHost(env.getOrDefault("SLURM_JOB_NODELIST", env.get("SLURM_NODELIST")));
            if ((port == null || port.isBlank()) && addr != null) {
                port = Long.toString(20000 + Math.floorMod(parseLong(env.getOrDefault("SLURM_JOB_ID", "0"), "SLURM_JOB_ID"), 20000L));
            }
        }
        if (addr != null && !addr.isBlank() && port != null && !port.isBlank()) {
            long p = parseLong(port, "MASTER_PORT");
            if (env.containsKey("TORCHELASTIC_RUN_ID")) p++;  // torchrun's own store listens on MASTER_PORT
            if (p < 1 || p > 65535) throw new IllegalArgumentException("MASTER_PORT=" + port + ": the rendezvous port " + p + " is not in 1-65535");
            return "tcp://" + (addr.contains(":") && !addr.startsWith("[") ? "[" + addr + "]" : addr) + ":" + p + "/" + job;
        }
        return "file:" + runDir.toAbsolutePath().resolve("rendezvous").resolve(job);
    }

    private static long parseLong(String v, String key) {
        try {
            return Long.parseLong(v.trim());
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("environment variable " + key + "=\"" + v + "\" is not an integer");
        }
    }

    /**
     * The first host of a Slurm node list in its compressed form: "gpu[07-09,12],cpu3" gives "gpu07",
     * "node1,node2" gives "node1" (as {@code scontrol show hostnames} would list first); null for none.
     */
    static String firstSlurmHost(String nodelist) {
        if (nodelist == null || nodelist.isBlank()) return null;
        String s = nodelist.trim();
        int bracket = s.indexOf('['), comma = s.indexOf(',');
        if (bracket < 0 || (comma >= 0 && comma < bracket)) return comma < 0 ? s : s.substring(0, comma);
        int close = s.indexOf(']', bracket);
        if (close < 0) throw new IllegalArgumentException("SLURM_JOB_NODELIST=\"" + nodelist + "\": an unclosed [");
        String first = s.substring(bracket + 1, close).split(",")[0].split("-")[0];
        return s.substring(0, bracket) + first + s.substring(close + 1).split(",")[0];
    }
}
