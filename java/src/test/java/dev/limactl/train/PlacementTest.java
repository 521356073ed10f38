package dev.limactl.train;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.Map;
import org.junit.jupiter.api.Test;

class PlacementTest {
    @Test
    void launchersVariablesPlaceTheProcess() {
        Placement t = Placement.fromEnvironment(Map.of("RANK", "3", "WORLD_SIZE", "8", "LOCAL_RANK", "1", "MASTER_ADDR", "node7",
                "MASTER_PORT", "29500"));
        assertEquals(new Placement(3, 8, 1, "torchrun-style variables", "node7-29500"), t);
        Placement s = Placement.fromEnvironment(Map.of("SLURM_PROCID", "5", "SLURM_NTASKS", "16", "SLURM_LOCALID", "1",
                "SLURM_JOB_ID", "4242", "SLURM_JOB_NODELIST", "gpu[01-04]"));
        assertEquals(new Placement(5, 16, 1, "Slurm", "4242.0"), s);
        Placement o = Placement.fromEnvironment(Map.of("OMPI_COMM_WORLD_RANK", "2", "OMPI_COMM_WORLD_SIZE", "4",
                "OMPI_COMM_WORLD_LOCAL_RANK", "0"));
        assertEquals(2, o.rank());
        assertEquals(4, o.world());
        assertEquals("Open MPI", o.launcher());
        assertEquals(Placement.SINGLE, Placement.fromEnvironment(Map.of("HOME", "/root")));
        assertTrue(!Placement.SINGLE.distributed() && t.distributed());
        // torchrun's variables win over Slurm's (torchrun inside an allocation)
        assertEquals("torchrun-style variables", Placement.fromEnvironment(Map.of("RANK", "0", "WORLD_SIZE", "2", "SLURM_PROCID", "0",
                "SLURM_NTASKS", "1")).launcher());
    }

    @Test
    void badVariablesAreErrorsNamingThem() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> Placement.fromEnvironment(Map.of("RANK", "x", "WORLD_SIZE", "2")));
        assertTrue(e.getMessage().contains("RANK=\"x\""), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> Placement.fromEnvironment(Map.of("RANK", "2", "WORLD_SIZE", "2")));
        assertTrue(e.getMessage().contains("RANK=2 is not a rank of WORLD_SIZE=2"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> Placement.fromEnvironment(Map.of("SLURM_PROCID", "0", "SLURM_NTASKS", "0")));
        assertTrue(e.getMessage().contains("world size must be >= 1"), e.getMessage());
    }

    @Test
    void rendezvousIsTheConfiguredOneElseTheEnvironmentsElseTheRunsJobDirectory() {
        Placement p = new Placement(0, 2, 0, "Slurm", "4242.0");
        Path run = Path.of("/shared/runs/x");
        assertEquals("file:/r", p.rendezvous("file:/r", Map.of("LIMACTL_RENDEZVOUS", "file:/e"), run));
        assertEquals("file:/e", p.rendezvous("", Map.of("LIMACTL_RENDEZVOUS", "file:/e"), run));
        assertEquals("file:/shared/runs/x/rendezvous/4242.0", p.rendezvous("", Map.of(), run));
        // Slurm: rank 0's server on the first host of the allocation, a port from the job id (or the given ones)
        assertEquals("tcp://gpu07:24242/4242.0", p.rendezvous("", Map.of("SLURM_JOB_NODELIST", "gpu[07-09,12],cpu3", "SLURM_JOB_ID", "4242"), run));
        assertEquals("tcp://10.0.0.5:29400/4242.0", p.rendezvous("", Map.of("SLURM_JOB_NODELIST", "gpu[07-09]", "MASTER_ADDR", "10.0.0.5",
                "MASTER_PORT", "29400"), run));
        // torchrun-style variables: MASTER_ADDR:MASTER_PORT; under torchrun itself (its agent serves that port) the next port
        Placement t = new Placement(1, 2, 1, "torchrun-style variables", "node7-29500");
        assertEquals("tcp://node7:29500/node7-29500", t.rendezvous("", Map.of("MASTER_ADDR", "node7", "MASTER_PORT", "29500"), run));
        assertEquals("tcp://node7:29501/node7-29500", t.rendezvous("", Map.of("MASTER_ADDR", "node7", "MASTER_PORT", "29500",
                "TORCHELASTIC_RUN_ID", "abc"), run));
        assertEquals("tcp://[fe80::1]:29500/node7-29500", t.rendezvous("", Map.of("MASTER_ADDR", "fe80::1", "MASTER_PORT", "29500"), run));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> t.rendezvous("", Map.of("MASTER_ADDR", "node7", "MASTER_PORT", "http"), run));
        assertTrue(e.getMessage().contains("MASTER_PORT=\"http\""), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> t.rendezvous("", Map.of("MASTER_ADDR", "node7", "MASTER_PORT", "70000"), run));
        assertTrue(e.getMessage().contains("not in 1-65535"), e.getMessage());
    }

    @Test
    void theFirstHostOfASlurmNodeList() {
        assertEquals("gpu07", Placement.firstSlurmHost("gpu[07-09,12]"));
        assertEquals("node1", Placement.firstSlurmHost("node1,node2"));
        assertEquals("a3", Placement.firstSlurmHost("a[3,5],b[1-2]"));
        assertEquals("rack1-n004", Placement.firstSlurmHost("rack1-n[004-010]"));
        assertEquals("solo", Placement.firstSlurmHost("solo"));
        assertEquals(null, Placement.firstSlurmHost(""));
        assertThrows(IllegalArgumentException.class, () -> Placement.firstSlurmHost("gpu[07-09"));
    }
}
