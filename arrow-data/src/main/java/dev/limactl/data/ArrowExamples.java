package dev.limactl.data;

import java.io.IOException;
import java.nio.channels.Channels;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.apache.arrow.memory.BufferAllocator;
import org.apache.arrow.vector.VarCharVector;
import org.apache.arrow.vector.VectorSchemaRoot;
import org.apache.arrow.vector.complex.ListVector;
import org.apache.arrow.vector.complex.MapVector;
import org.apache.arrow.vector.complex.StructVector;
import org.apache.arrow.vector.ipc.ArrowFileReader;
import org.apache.arrow.vector.ipc.ArrowFileWriter;
import org.apache.arrow.vector.ipc.message.ArrowBlock;

/** Reads and writes example files in the Arrow IPC file format with {@link ExampleSchema}. */
public final class ArrowExamples {
    private static final int BATCH_ROWS = 1024;

    private ArrowExamples() {}

    /** Writes examples to path (via a temporary file and an atomic rename), in record batches of 1024 rows. */
    public static void write(Path path, List<Example> examples) {
        try {
            AtomicFiles.replace(path, tmp -> {
                try (BufferAllocator alloc = ArrowMemory.allocator();
                     VectorSchemaRoot root = VectorSchemaRoot.create(ExampleSchema.schema(), alloc);
                     FileChannel ch = FileChannel.open(tmp, StandardOpenOption.CREATE, StandardOpenOption.TRUNCATE_EXISTING,
                             StandardOpenOption.WRITE);
                     ArrowFileWriter writer = new ArrowFileWriter(root, null, ch)) {
                    writer.start();
                    for (int from = 0; from < examples.size() || from == 0; from += BATCH_ROWS) {
                        fill(root, examples.subList(from, Math.min(examples.size(), from + BATCH_ROWS)));
                        writer.writeBatch();
                        if (examples.isEmpty()) break;
                    }
                    writer.end();
                    ch.force(true);
                }
            });
        } catch (java.io.UncheckedIOException e) {
            throw new DataFormatException(e.getMessage(), e);
        }
    }

    /** The vectors of one record batch of {@link ExampleSchema}. */
    private record Vectors(VarCharVector id, VarCharVector source, VarCharVector split, ListVector turns, StructVector turn,
                           VarCharVector role, VarCharVector text, MapVector prov, StructVector entry, VarCharVector key,
                           VarCharVector value) {
        static Vectors of(VectorSchemaRoot root) {
            ListVector turns = (ListVector) root.getVector("turns");
            StructVector turn = (StructVector) turns.getDataVector();
            MapVector prov = (MapVector) root.getVector("provenance");
            StructVector entry = (StructVector) prov.getDataVector();
            return new Vectors((VarCharVector) root.getVector("id"), (VarCharVector) root.getVector("source"),
                    (VarCharVector) root.getVector("split"), turns, turn, (VarCharVector) turn.getChild("role"),
                    (VarCharVector) turn.getChild("text"), prov, entry, (VarCharVector) entry.getChild("key"),
                    (VarCharVector) entry.getChild("value"));
        }
    }

    private static void fill(VectorSchemaRoot root, List<Example> rows) {
        root.allocateNew();
        Vectors vs = Vectors.of(root);
        VarCharVector id = vs.id(), source = vs.source(), split = vs.split(), role = vs.role(), text = vs.text(), key = vs.key(), value = vs.value();
        ListVector turns = vs.turns();
        StructVector turn = vs.turn(), entry = vs.entry();
        MapVector prov = vs.prov();
        int t = 0, p = 0;
        for (int i = 0; i < rows.size(); i++) {
            Example e = rows.get(i);
            id.setSafe(i, utf8(e.id()));
            source.setSafe(i, utf8(e.source()));
            split.setSafe(i, utf8(e.split()));
            turns.startNewValue(i);
            for (Turn tu : e.turns()) {
                turn.setIndexDefined(t);
                role.setSafe(t, utf8(tu.role()));
                text.setSafe(t, utf8(tu.text()));
                t++;
            }
            turns.endValue(i, e.turns().size());
            prov.startNewValue(i);
            for (Map.Entry<String, String> kv : e.provenance().entrySet()) {
                entry.setIndexDefined(p);
                key.setSafe(p, utf8(kv.getKey()));
                value.setSafe(p, utf8(kv.getValue()));
                p++;
            }
            prov.endValue(i, e.provenance().size());
        }
        for (var v : List.of(role, text)) v.setValueCount(t);
        turn.setValueCount(t);
        for (var v : List.of(key, value)) v.setValueCount(p);
        entry.setValueCount(p);
        root.setRowCount(rows.size());
    }

    /** Whether a file is an Arrow IPC file carrying limactl's example schema. */
    public static boolean isExampleFile(Path path) {
        try (BufferAllocator alloc = ArrowMemory.allocator();
             FileChannel ch = FileChannel.open(path, StandardOpenOption.READ);
             ArrowFileReader reader = new ArrowFileReader(ch, alloc)) {
            Map<String, String> meta = reader.getVectorSchemaRoot().getSchema().getCustomMetadata();
            return meta != null && meta.containsKey(ExampleSchema.METADATA_KEY);
        } catch (NoSuchFileException e) {
            throw new DataFormatException("data file " + path + " does not exist", e);
        } catch (IOException | RuntimeException e) {
            if (e instanceof ArrowMemory.NotOpened) throw (RuntimeException) e;
            return false;  // not an IPC file with our schema: a stream, another table, or not Arrow (said by the reader that tries it)
        }
    }

    /** Reads every example of an Arrow IPC file; errors name the file and the row. */
    public static List<Example> read(Path path) {
        List<Example> out = new ArrayList<>();
        try (BufferAllocator alloc = ArrowMemory.allocator();
             FileChannel ch = FileChannel.open(path, StandardOpenOption.READ);
             ArrowFileReader reader = new ArrowFileReader(ch, alloc)) {
            VectorSchemaRoot root = reader.getVectorSchemaRoot();
            String version = root.getSchema().getCustomMetadata() == null ? null
                    : root.getSchema().getCustomMetadata().get(ExampleSchema.METADATA_KEY);
            if (!ExampleSchema.VERSION.equals(version)) {
                throw new DataFormatException(path + ": not a limactl example file (schema metadata "
                        + ExampleSchema.METADATA_KEY + " = " + version + ", expected " + ExampleSchema.VERSION + ")");
            }
            int base = 0;
            for (ArrowBlock block : reader.getRecordBlocks()) {
                reader.loadRecordBatch(block);
                readBatch(path, root, base, out);
                base += root.getRowCount();
            }
        } catch (NoSuchFileException e) {
            throw new DataFormatException("data file " + path + " does not exist", e);
        } catch (IOException | RuntimeException e) {
            if (e instanceof DataFormatException || e instanceof ArrowMemory.NotOpened) throw (RuntimeException) e;
            throw new DataFormatException(path + ": not a readable Arrow IPC file: " + e.getMessage(), e);
        }
        return out;
    }

    private static void readBatch(Path path, VectorSchemaRoot root, int base, List<Example> out) {
        Vectors vs = Vectors.of(root);
        VarCharVector id = vs.id(), source = vs.source(), split = vs.split(), role = vs.role(), text = vs.text(), key = vs.key(), value = vs.value();
        ListVector turns = vs.turns();
        MapVector prov = vs.prov();
        for (int i = 0; i < root.getRowCount(); i++) {
            try {
                List<Turn> ts = new ArrayList<>();
                for (int j = turns.getElementStartIndex(i); j < turns.getElementEndIndex(i); j++) {
                    ts.add(new Turn(str(role, j), str(text, j)));
                }
                Map<String, String> pv = new LinkedHashMap<>();
                for (int j = prov.getElementStartIndex(i); j < prov.getElementEndIndex(i); j++) {
                    pv.put(str(key, j), value.isNull(j) ? "" : str(value, j));
                }
                out.add(new Example(str(id, i), str(source, i), str(split, i), ts, pv));
            } catch (IllegalArgumentException | NullPointerException e) {
                throw new DataFormatException(path + ": row " + (base + i) + ": " + e.getMessage(), e);
            }
        }
    }

    private static byte[] utf8(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    private static String str(VarCharVector v, int i) {
        if (v.isNull(i)) throw new NullPointerException(v.getName() + " is null");
        return new String(v.get(i), StandardCharsets.UTF_8);
    }
}
