package dev.limactl.cli;

import java.io.IOException;
import java.io.PrintWriter;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.lang.management.ManagementFactory;
import java.nio.file.Path;
import java.time.LocalDateTime;
import java.time.format.DateTimeFormatter;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;

/**
 * {@code limactl train --nproc-per-node N}: starts N processes of this same command, each told its
 * place with torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) and a
 * fresh rendezvous directory of the run, then waits for them. When one fails, the others are
 * stopped (they would fail at their next collective anyway) and its exit code is the launcher's; a
 * rank that does not stop within {@link #GRACE_S} seconds of being told (a hung or suspended process)
 * is killed, so the launcher never waits on it. A hung rank makes the others fail at their next
 * collective within distributed.timeout_s; the launcher then ends it the same way.
 * Ctrl-C reaches every rank (one process group); a SIGTERM to the launcher is passed on to them, and
 * each rank then stops with the others after the current step and saves its part of the state.
 */
final class LocalRanks {
    /** Seconds a rank has to stop (saving nothing: its peers are gone) before it is killed. */
    static final int GRACE_S = 15;

    private LocalRanks() {}

    static int launch(int n, Path run, List<String> originalArgs, PrintWriter err) throws Exception {
        if (n < 1 || n > 256) throw new IllegalArgumentException("--nproc-per-node must be in [1, 256], got " + n);
        String stamp = LocalDateTime.now().format(DateTimeFormatter.ofPattern("yyyyMMdd-HHmmss")) + "-" + ProcessHandle.current().pid();
        String rendezvous = "file:" + run.toAbsolutePath().resolve("rendezvous").resolve("local-" + stamp);
        List<String> cmd = new ArrayList<>();
        cmd.add(Path.of(System.getProperty("java.home"), "bin", "java").toString());
        cmd.addAll(ManagementFactory.getRuntimeMXBean().getInputArguments());
        cmd.add("-cp");
        cmd.add(System.getProperty("java.class.path"));
        cmd.add(Main.class.getName());
        cmd.addAll(rankArguments(originalArgs));
        List<Process> ranks = new ArrayList<>();
        Thread forward = new Thread(() -> ranks.forEach(Process::destroy), "limactl-ranks-stop");
        Runtime.getRuntime().addShutdownHook(forward);
        try {
            for (int r = 0; r < n; r++) {
                ProcessBuilder pb = new ProcessBuilder(cmd).inheritIO();
                pb.environment().put("RANK", Integer.toString(r));
                pb.environment().put("LOCAL_RANK", Integer.toString(r));
                pb.environment().put("WORLD_SIZE", Integer.toString(n));
                pb.environment().put("LOCAL_WORLD_SIZE", Integer.toString(n));
                pb.environment().put("MASTER_ADDR", "127.0.0.1");
                pb.environment().putIfAbsent("MASTER_PORT", "29500");
                pb.environment().put("LIMACTL_RENDEZVOUS", rendezvous);
                ranks.add(pb.start());
            }
            err.printf("limactl: %d local ranks started (rendezvous %s)%n", n, rendezvous);
            err.flush();
            int failed = -1, code = 0;
            long stopAt = 0;
            List<Integer> killed = new ArrayList<>();
            while (true) {
                boolean running = false;
                for (int r = 0; r < n; r++) {
                    Process p = ranks.get(r);
                    if (p.isAlive()) {
                        running = true;
                    } else if (p.exitValue() != 0 && failed < 0) {
                        failed = r;
                        code = p.exitValue();
                    }
                }
                if (!running) break;
                if (failed >= 0 && code != ExitCodes.INTERRUPTED) {  // one failed: the others cannot go on
                    if (stopAt == 0) {
                        for (Process p : ranks) if (p.isAlive()) p.destroy();
                        stopAt = System.nanoTime() + GRACE_S * 1_000_000_000L;
                    } else if (System.nanoTime() > stopAt) {  // told, and still there: hung or suspended
                        for (int r = 0; r < n; r++) {
                            if (ranks.get(r).isAlive() && !killed.contains(r)) {
                                ranks.get(r).destroyForcibly();
                                killed.add(r);
                            }
                        }
                    }
                }
                Thread.sleep(100);
            }
            if (failed >= 0) {
                if (code != ExitCodes.INTERRUPTED) {
                    List<String> how = new ArrayList<>();
                    for (int r = 0; r < n; r++) {
                        int v = ranks.get(r).exitValue();
                        if (killed.contains(r)) how.add("rank " + r + " did not stop within " + GRACE_S + " s and was killed");
                        else if (v != 0) how.add("rank " + r + " exit " + v + (v > 128 && v != ExitCodes.INTERRUPTED ? " (killed by signal " + (v - 128) + ")" : ""));
                    }
                    err.printf("limactl: %d local ranks: %s; the others were stopped%n", n, String.join(", ", how));
                }
                return code;
            }
            return ExitCodes.OK;
        } finally {
            for (Process p : ranks) if (p.isAlive()) p.waitFor(30, TimeUnit.SECONDS);
            if (ranks.stream().noneMatch(Process::isAlive)) removeRendezvous(run, Path.of(rendezvous.substring("file:".length())));
            try {
                Runtime.getRuntime().removeShutdownHook(forward);
            } catch (IllegalStateException shuttingDown) {
                // the hook is running: the ranks were told to stop
            }
        }
    }

    /**
     * This launch's rendezvous directory (fresh for each launch, never read again once its ranks are
     * gone), its parent and the run directory when that leaves them empty (a start that failed).
     */
    static void removeRendezvous(Path run, Path mine) {
        try {
            if (Files.exists(mine)) {
                try (Stream<Path> s = Files.walk(mine)) {
                    for (Path p : s.sorted(Comparator.reverseOrder()).toList()) Files.deleteIfExists(p);
                }
            }
            for (Path d : List.of(mine.getParent(), run.toAbsolutePath())) {
                if (!Files.isDirectory(d)) continue;
                try (Stream<Path> left = Files.list(d)) {
                    if (left.findAny().isPresent()) break;
                }
                Files.delete(d);
            }
        } catch (IOException | UncheckedIOException e) {
            // best effort: a leftover directory is harmless (each launch makes a new one)
        }
    }

    /** This command's arguments without --nproc-per-node (each rank is one process of the job). */
    static List<String> rankArguments(List<String> args) {
        List<String> out = new ArrayList<>();
        for (int i = 0; i < args.size(); i++) {
            String a = args.get(i);
            if (a.equals("--nproc-per-node")) {
                i++;
            } else if (!a.startsWith("--nproc-per-node=")) {
                out.add(a);
            }
        }
        return out;
    }
}
