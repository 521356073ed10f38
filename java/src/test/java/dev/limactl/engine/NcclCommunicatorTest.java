package dev.limactl.engine;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeFalse;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The NCCL side of CUDA ranks that runs without a GPU: rank 0's unique id survives the float
 * broadcast that carries it, and joining on a machine without a CUDA device fails on every rank
 * with a message naming what is missing, instead of hanging or crashing. (Two CUDA ranks training
 * over NCCL are checked by the GPU script, ci/bench-gpu.sh dp.)
 */
class NcclCommunicatorTest {
    @TempDir
    Path dir;

    @Test
    void everyByteOfTheUniqueIdSurvivesTheBroadcast() {
        byte[] id = new byte[256];
        for (int i = 0; i < id.length; i++) id[i] = (byte) i;
        float[] f = Communicator.packId(id, false);
        assertEquals(0.0f, f[id.length]);
        for (int i = 0; i < id.length; i++) assertEquals(i, f[i]);  // exact small integers, never NaN patterns
        assertArrayEquals(id, Communicator.unpackId(f));
        assertEquals(1.0f, Communicator.packId(new byte[128], true)[128]);
    }

    @Test
    void joiningWithoutACudaDeviceFailsNamingWhatIsMissing() throws Exception {
        assumeFalse(Files.exists(Path.of("/dev/nvidiactl")), "a CUDA driver is present: the GPU script covers NCCL");
        Path rv = Files.createDirectories(dir.resolve("rv"));
        try (Communicator host = Communicator.join("gloo", 0, 1, "file:" + rv, Duration.ofSeconds(20))) {
            LimaException e = assertThrows(LimaException.class, () -> Communicator.joinNccl(host, "cuda:0", Duration.ofSeconds(5)));
            String m = e.getMessage();
            assertTrue(m.contains("NCCL") || m.contains("CUDA"), m);
            // the host communicator is still usable: the failure was rank 0's own, said to every rank
            float[] one = {1};
            host.allreduceSum(one);
            assertEquals(1.0f, one[0]);
        }
    }
}
