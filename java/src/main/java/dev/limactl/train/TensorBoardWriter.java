package dev.limactl.train;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.zip.CRC32C;

/**
 * Scalars in TensorBoard's event-file format, so {@code tensorboard --logdir RUN/tensorboard} follows a
 * run. Written here because no maintained Java library writes them without TensorFlow itself: the
 * format is small and fixed (TFRecord framing with masked CRC-32C around {@code tensorflow.Event}
 * protocol buffers holding {@code Summary.Value.simple_value}), and a test reads the file back with
 * TensorBoard's own reader. Each record is flushed as it is written; a record cut by a kill is
 * skipped by TensorBoard's reader, and a resumed run starts a new file beside the old one.
 */
public final class TensorBoardWriter implements AutoCloseable {
    private static final java.util.concurrent.atomic.AtomicInteger COUNTER = new java.util.concurrent.atomic.AtomicInteger();
    private final OutputStream out;

    private TensorBoardWriter(OutputStream out) {
        this.out = out;
    }

    /** A new event file in dir (created), named as TensorBoard's writers name theirs. */
    public static TensorBoardWriter open(Path dir) throws IOException {
        Files.createDirectories(dir);
        String host;
        try {
            host = java.net.InetAddress.getLocalHost().getHostName();
        } catch (IOException e) {
            host = "localhost";
        }
        long now = System.currentTimeMillis();
        // TensorFlow's name: time, host, pid and a counter (two writers of one process in one second differ by it)
        Path file;
        OutputStream os;
        while (true) {
            file = dir.resolve("events.out.tfevents." + now / 1000 + "." + host + "." + ProcessHandle.current().pid() + "." + COUNTER.getAndIncrement());
            try {
                os = Files.newOutputStream(file, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE);
                break;
            } catch (java.nio.file.FileAlreadyExistsException e) {
                // another writer (an earlier run of this process) has that name: take the next number
            }
        }
        TensorBoardWriter w = new TensorBoardWriter(os);
        // the first event names the format version (Event.file_version = 3)
        ByteArrayOutputStream ev = new ByteArrayOutputStream();
        fixed64(ev, 1, Double.doubleToLongBits(now / 1000.0));
        bytes(ev, 3, "brain.Event:2".getBytes(StandardCharsets.UTF_8));
        w.record(ev.toByteArray());
        return w;
    }

    /** One scalar: Event{wall_time = 1, step = 2, summary = 5 {value = 1 {tag = 1, simple_value = 2}}}. */
    public void scalar(String tag, long step, double value) throws IOException {
        ByteArrayOutputStream v = new ByteArrayOutputStream();
        bytes(v, 1, tag.getBytes(StandardCharsets.UTF_8));
        key(v, 2, 5);
        int bits = Float.floatToIntBits((float) value);
        for (int i = 0; i < 4; i++) v.write(bits >>> (8 * i));
        ByteArrayOutputStream summary = new ByteArrayOutputStream();
        bytes(summary, 1, v.toByteArray());
        ByteArrayOutputStream ev = new ByteArrayOutputStream();
        fixed64(ev, 1, Double.doubleToLongBits(System.currentTimeMillis() / 1000.0));
        key(ev, 2, 0);
        varint(ev, step);
        bytes(ev, 5, summary.toByteArray());
        record(ev.toByteArray());
    }

    public void flush() throws IOException {
        out.flush();
    }

    @Override
    public void close() throws IOException {
        out.close();
    }

    /** TFRecord: length (u64 LE), masked CRC of the length, data, masked CRC of the data. */
    private void record(byte[] data) throws IOException {
        byte[] len = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(data.length).array();
        ByteBuffer b = ByteBuffer.allocate(8 + 4 + data.length + 4).order(ByteOrder.LITTLE_ENDIAN);
        b.put(len).putInt(masked(len)).put(data).putInt(masked(data));
        out.write(b.array());
    }

    static int masked(byte[] data) {
        CRC32C c = new CRC32C();
        c.update(data);
        int crc = (int) c.getValue();
        return ((crc >>> 15) | (crc << 17)) + 0xa282ead8;
    }

    private static void key(ByteArrayOutputStream o, int field, int wireType) {
        varint(o, ((long) field << 3) | wireType);
    }

    private static void varint(ByteArrayOutputStream o, long v) {
        while ((v & ~0x7FL) != 0) {
            o.write((int) ((v & 0x7F) | 0x80));
            v >>>= 7;
        }
        o.write((int) v);
    }

    private static void fixed64(ByteArrayOutputStream o, int field, long bits) {
        key(o, field, 1);
        for (int i = 0; i < 8; i++) o.write((int) (bits >>> (8 * i)));
    }

    private static void bytes(ByteArrayOutputStream o, int field, byte[] b) {
        key(o, field, 2);
        varint(o, b.length);
        o.write(b, 0, b.length);
    }
}
