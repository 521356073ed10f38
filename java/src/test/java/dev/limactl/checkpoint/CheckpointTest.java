package dev.limactl.checkpoint;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Optional;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class CheckpointTest {
    @TempDir Path dir;

    @Test
    void writtenRecordReadsBackAndAPlainCheckpointHasNone() {
        assertEquals(Optional.empty(), Checkpoint.read(dir));
        Checkpoint c = Checkpoint.lima(1024, 7, 350);
        c.write(dir);
        assertEquals(Optional.of(c), Checkpoint.read(dir));
        assertEquals("lima-eot-1", Checkpoint.read(dir).get().chatFormat());
        assertEquals(1024, c.eotWithin(1025, dir));
    }

    @Test
    void unreadableOrOutOfRangeRecordsAreInputErrorsNamingTheFile() throws Exception {
        Path meta = dir.resolve(Checkpoint.FILE);
        for (String bad : new String[] {"{\"eot_token_id\": ", "{}", "{\"eot_token_id\": -3}", "{\"eot_token_id\": 1.5}",
                "{\"eot_token_id\": \"7\"}", "[]"}) {
            Files.writeString(meta, bad);
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Checkpoint.read(dir), bad);
            assertTrue(e.getMessage().contains(meta.toString()), e.getMessage());
        }
        Files.writeString(meta, "{\"eot_token_id\": 5000}");
        Checkpoint c = Checkpoint.read(dir).orElseThrow();
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> c.eotWithin(1025, dir));
        assertTrue(e.getMessage().contains("5000") && e.getMessage().contains("1025"), e.getMessage());
    }
}
