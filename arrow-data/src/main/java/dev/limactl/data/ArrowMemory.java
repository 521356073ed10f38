package dev.limactl.data;

import java.nio.ByteBuffer;
import org.apache.arrow.memory.BufferAllocator;
import org.apache.arrow.memory.RootAllocator;

/**
 * Arrow's allocator, after checking the one JVM setting Arrow Java needs on Java 17+: java.nio
 * opened to it. Without it Arrow fails deep inside its memory code with a message about the file
 * being read; this names the flag instead.
 */
final class ArrowMemory {
    static final String FLAG = "--add-opens=java.base/java.nio=ALL-UNNAMED";

    private ArrowMemory() {}

    /** The JVM lacks the option Arrow needs; the message names it. */
    static final class NotOpened extends IllegalStateException {
        NotOpened(String message) {
            super(message);
        }
    }

    static BufferAllocator allocator() {
        if (!ByteBuffer.class.getModule().isOpen("java.nio", RootAllocator.class.getModule())) {
            throw new NotOpened("Apache Arrow needs the JVM option " + FLAG
                    + " (java.base does not open java.nio to it): add it to the java command that runs limactl"
                    + " (cli/bin/limactl does) or your service");
        }
        return new RootAllocator();
    }
}
