package dev.limactl.engine;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class EngineTest {
    @TempDir Path dir;

    static ModelConfig tiny() {
        return ModelConfig.llama(31, 16, 24, 2, 4, 2, 64);
    }

    static Batch batch(int vocab) {
        int[] tok = new int[2 * 10];
        byte[] mask = new byte[tok.length];
        for (int i = 0; i < tok.length; i++) {
            tok[i] = (i * 7 + 1) % vocab;
            mask[i] = (byte) (i % 10 >= 3 ? 1 : 0);
        }
        return new Batch(2, 10).set(tok, mask, null);
    }

    @Test
    void loadsTheNativeLibraryFromTheJarAndReportsItsVersion() {
        assertEquals(Lima.EXPECTED_ABI, Lima.abiVersion());
        assertTrue(Lima.version().startsWith("liblima"), Lima.version());
    }

    @Test
    void trainsSavesAndLoadsBack() {
        try (Model m = Model.random(tiny(), 1); Batch b = batch(31); Trainer t = Trainer.create(m, TrainOptions.lima(0.2f, 3))) {
            assertEquals(14, b.numTargets());
            double first = 0, last = 0;
            for (int s = 0; s < 8; s++) {
                Trainer.ForwardBackward r = t.forwardBackward(b, b.numTargets());
                Trainer.Step st = t.step(3e-3f);
                assertEquals(s + 1, st.step());
                assertTrue(st.gradNorm() > 0);
                if (s == 0) first = r.lossSum() / r.numTargets();
                last = r.lossSum() / r.numTargets();
            }
            assertTrue(last < first, first + " -> " + last);
            m.save(dir.resolve("ckpt"), Dtype.F32);
            try (Model back = Model.load(dir.resolve("ckpt"))) {
                assertEquals(m.config(), back.config());
                assertEquals(m.numParams(), back.numParams());
                assertArrayEquals(m.readTensor("lm_head.weight"), back.readTensor("lm_head.weight"));
                assertArrayEquals(m.tokenLogprobs(b), back.tokenLogprobs(b));
            }
        }
    }

    @Test
    void nativeErrorsBecomeExceptionsWithTheNativeMessage() throws Exception {
        LimaException e = assertThrows(LimaException.class, () -> Model.load(dir.resolve("missing")));
        assertEquals(LimaStatus.IO, e.status());
        assertTrue(e.getMessage().contains("does not exist"), e.getMessage());
        Files.createDirectories(dir.resolve("bad"));
        Files.writeString(dir.resolve("bad/config.json"), "{\"vocab_size\": 3");
        e = assertThrows(LimaException.class, () -> Model.load(dir.resolve("bad")));
        assertEquals(LimaStatus.FORMAT, e.status());
        try (Model m = Model.random(tiny(), 1)) {
            Batch b = new Batch(1, 3).set(new int[] {1, 2, 31}, new byte[] {0, 1, 1}, null);
            e = assertThrows(LimaException.class, () -> m.tokenLogprobs(b));
            assertTrue(e.getMessage().contains("outside the vocabulary"), e.getMessage());
            b.close();
        }
    }

    @Test
    void everyNativeStatusHasItsConstantWithTheNativeName() {
        for (LimaStatus s : LimaStatus.values()) {
            assertEquals(s.nativeName(), dev.limactl.engine.binding.LimaNative.statusName(s.code()), s.toString());
            assertEquals(s, LimaStatus.of(s.code()));
        }
        // the code after the last constant is unknown to liblima too: the enum is complete
        int next = LimaStatus.values().length;
        assertEquals("LIMA_ERR_UNKNOWN", dev.limactl.engine.binding.LimaNative.statusName(next));
        assertThrows(IllegalStateException.class, () -> LimaStatus.of(next));
    }

    @Test
    void versionNamesTheBackendsOfThisProcess() {
        String v = Lima.version();
        assertTrue(v.contains("backends: cpu, cuda"), v);
    }
}
