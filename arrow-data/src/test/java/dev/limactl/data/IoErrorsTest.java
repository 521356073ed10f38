package dev.limactl.data;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.AccessDeniedException;
import java.nio.file.FileSystemException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class IoErrorsTest {
    @TempDir Path dir;

    /** The causes Java leaves as a bare path are named, then the path; others keep their own words. */
    @Test
    void namesTheCauseThenThePath() {
        assertEquals("no such file or directory (/x/a.tmp)", IoErrors.why(new NoSuchFileException("/x/a.tmp")));
        assertEquals("permission denied (/x/a -> /x/b)", IoErrors.why(new AccessDeniedException("/x/a", "/x/b", null)));
        assertEquals("Read-only file system (/x/a)", IoErrors.why(new FileSystemException("/x/a", null, "Read-only file system")));
        assertEquals("disk full", IoErrors.why(new IOException("disk full")));
        assertEquals("java.io.IOException", IoErrors.why(new IOException()));
    }

    /** A real failure through AtomicFiles: the message says what went wrong, not only a temporary's path. */
    @Test
    void aFailedAtomicWriteSaysWhy() throws IOException {
        Path target = dir.resolve("out.txt");
        UncheckedIOException e = assertThrows(UncheckedIOException.class,
                () -> AtomicFiles.replace(target, tmp -> Files.writeString(tmp.resolveSibling("missing").resolve("x"), "x")));
        assertTrue(e.getMessage().startsWith("cannot write " + target + ": no such file or directory ("), e.getMessage());
        assertTrue(Files.notExists(target));
    }
}
