package dev.limactl.data;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;

/** Writing a file so that readers see the old content or the new, never a half-written file. */
public final class AtomicFiles {
    /** Writes the new content to the given temporary path. */
    @FunctionalInterface
    public interface Content {
        void writeTo(Path tmp) throws IOException;
    }

    private AtomicFiles() {}

    /** Writes target.tmp, then renames it over target; on failure target is untouched and the temporary file removed. */
    public static void replace(Path target, Content content) {
        checkWritable(target);
        Path tmp = target.resolveSibling(target.getFileName() + ".tmp");
        try {
            content.writeTo(tmp);
            Files.move(tmp, target, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        } catch (IOException e) {
            try {
                Files.deleteIfExists(tmp);
            } catch (IOException ignored) {
                // the original error is the one to report
            }
            throw new UncheckedIOException("cannot write " + target + ": " + IoErrors.why(e), e);
        }
    }

    /** A target whose directory is missing, or that is a directory, is refused naming it (not its temporary). */
    public static void checkWritable(Path target) {
        Path dir = target.toAbsolutePath().getParent();
        String why = dir != null && !Files.isDirectory(dir) ? "its directory " + dir + " does not exist"
                : Files.isDirectory(target) ? "it is a directory" : null;
        if (why != null) {
            String msg = "cannot write " + target + ": " + why;
            throw new UncheckedIOException(msg, new IOException(msg));
        }
    }

    public static void writeString(Path target, String text) {
        replace(target, tmp -> Files.writeString(tmp, text));
    }
}
