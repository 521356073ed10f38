package dev.limactl.train;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.limactl.engine.LimaException;
import dev.limactl.engine.LimaStatus;
import dev.limactl.engine.Trainer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class HostMemoryTest {
    @TempDir
    Path dir;

    static final long GIB = 1L << 30;

    /** 7B-like figures: 6.7e9 weights (25 GiB), gradients + moments 75 GiB, activations 3 GiB. */
    static Trainer.MemoryPlan plan(long optimizer) {
        return new Trainer.MemoryPlan(25 * GIB, optimizer, 3 * GIB, 0, 25 * GIB + optimizer + 3 * GIB, 0, 0, 0, 0);
    }

    @Test
    void aPlanThatFitsPassesAndOneThatDoesNotIsRefusedWithTheFigures() {
        Placement one = Placement.SINGLE;
        HostMemory.check(plan(75 * GIB), 6_738_415_616L, one, 0, Map.of(), 100 * GIB);  // 78 of 100 GiB: fits
        HostMemory.check(plan(75 * GIB), 6_738_415_616L, one, 0, Map.of(), -1);         // unknown: not checked
        LimaException e = assertThrows(LimaException.class, () -> HostMemory.check(plan(75 * GIB), 6_738_415_616L, one, 0, Map.of(), 24 * GIB));
        assertEquals(LimaStatus.OUT_OF_MEMORY, e.status());
        assertTrue(e.getMessage().contains("training needs 78.00 GiB more host memory per rank (gradients and optimiser state 75.00 GiB,"
                + " activations 3.00 GiB, gathered weights 0.00 GiB) but 24.00 GiB is available"), e.getMessage());
        assertTrue(e.getMessage().contains("6,738,415,616 weights take 25.00 GiB already"), e.getMessage());
        assertTrue(e.getMessage().contains("--nproc-per-node N"), e.getMessage());
        // four ranks on this host share it: a quarter each; below stage 3 the message points at the stage
        Placement rank = new Placement(1, 4, 1, "torchrun-style variables", "j");
        e = assertThrows(LimaException.class, () -> HostMemory.check(plan(20 * GIB), 6_738_415_616L, rank, 1, Map.of("LOCAL_WORLD_SIZE", "4"),
                64 * GIB));
        assertTrue(e.getMessage().contains("but 16.00 GiB is available (64.00 GiB shared by 4 ranks on this host)"), e.getMessage());
        assertTrue(e.getMessage().contains("a higher distributed.zero_stage"), e.getMessage());
        HostMemory.check(plan(10 * GIB), 6_738_415_616L, rank, 3, Map.of("LOCAL_WORLD_SIZE", "4"), 64 * GIB);
    }

    @Test
    void ranksOnThisHostAndMemAvailable() throws Exception {
        Placement p = new Placement(0, 8, 0, "Slurm", "j");
        assertEquals(4, HostMemory.ranksOnThisHost(p, Map.of("SLURM_NTASKS_PER_NODE", "4(x2)")));
        assertEquals(2, HostMemory.ranksOnThisHost(p, Map.of("OMPI_COMM_WORLD_LOCAL_SIZE", "2")));
        assertEquals(1, HostMemory.ranksOnThisHost(p, Map.of("LOCAL_WORLD_SIZE", "many")));
        assertEquals(8, HostMemory.ranksOnThisHost(p, Map.of("LOCAL_WORLD_SIZE", "64")));  // never more than the world
        Path info = dir.resolve("meminfo");
        Files.writeString(info, "MemTotal:       24000000 kB\nMemFree:         1000 kB\nMemAvailable:   20000000 kB\n");
        assertEquals(20000000L * 1024, HostMemory.available(info));
        Files.writeString(info, "MemTotal: 1 kB\n");
        assertEquals(-1, HostMemory.available(info));
        assertEquals(-1, HostMemory.available(dir.resolve("missing")));
    }
}
