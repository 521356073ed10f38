package dev.limactl.data;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.io.InputStream;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;
import org.apache.arrow.memory.BufferAllocator;
import org.apache.arrow.vector.FieldVector;
import org.apache.arrow.vector.VectorSchemaRoot;
import org.apache.arrow.vector.ipc.ArrowReader;
import org.apache.arrow.vector.ipc.ArrowStreamReader;

/**
 * Example files in the formats users already have, read into limactl's examples with the rules of
 * {@link JsonlExamples#parse}: a JSON array file ({@code .json}, e.g. Alpaca's alpaca_data.json), and
 * Arrow tables of Hugging Face {@code datasets} (a {@code save_to_disk} folder, or one of its
 * {@code .arrow} stream files) whose columns are one of the JSON formats' fields (messages,
 * conversations, instruction/input/output, ...). Each Arrow row is turned into the JSON object it
 * stands for (Arrow Java's own JSON-ready values) and read as a JSON line would be.
 */
public final class ForeignExamples {
    private static final ObjectMapper JSON = new ObjectMapper();

    private ForeignExamples() {}

    /** A JSON array of examples: each element in any of the JSON Lines formats. */
    public static List<Example> readJsonArray(Path path, String defaultSplit) {
        JsonNode n;
        try {
            n = JSON.readTree(Utf8Text.read(path));
        } catch (NoSuchFileException e) {
            throw new DataFormatException("data file " + path + " does not exist", e);
        } catch (com.fasterxml.jackson.core.JacksonException e) {
            throw new DataFormatException(path + ": not valid JSON: " + e.getOriginalMessage(), e);
        } catch (IOException e) {
            throw new DataFormatException("cannot read " + path + ": " + IoErrors.why(e), e);
        }
        if (n == null || !n.isArray()) throw new DataFormatException(path + ": expected a JSON array of examples");
        return rows(path, n.elements(), "element ", defaultSplit);
    }

    static List<Example> rows(Path path, java.util.Iterator<JsonNode> rows, String what, String defaultSplit) {
        String stem = path.getFileName().toString().replaceFirst("\\.(json|arrow|parquet)$", "");
        List<Example> out = new ArrayList<>();
        int i = 0;
        while (rows.hasNext()) {
            JsonNode row = rows.next();
            try {
                out.add(JsonlExamples.parse(row, stem + "-" + (i + 1), defaultSplit));
            } catch (IllegalArgumentException | NullPointerException e) {
                throw new DataFormatException(path + ": " + what + i + ": " + e.getMessage(), e);
            }
            i++;
        }
        return out;
    }

    /** Whether a directory is a Hugging Face datasets save_to_disk folder (state.json beside .arrow files). */
    public static boolean isHfDataset(Path dir) {
        return Files.isDirectory(dir) && Files.isRegularFile(dir.resolve("state.json"));
    }

    /** Every row of a save_to_disk folder, its .arrow files in the order state.json lists them. */
    public static List<Example> readHfDataset(Path dir, String defaultSplit) {
        List<Path> files = new ArrayList<>();
        try {
            JsonNode state = JSON.readTree(Utf8Text.read(dir.resolve("state.json")));
            for (JsonNode f : state.path("_data_files")) files.add(dir.resolve(f.path("filename").asText()));
            if (files.isEmpty()) {
                try (Stream<Path> s = Files.list(dir)) {
                    files.addAll(s.filter(p -> p.getFileName().toString().endsWith(".arrow")).sorted().toList());
                }
            }
        } catch (IOException e) {
            throw new DataFormatException(dir + ": not a readable Hugging Face dataset folder: " + e.getMessage(), e);
        }
        if (files.isEmpty()) throw new DataFormatException(dir + ": a Hugging Face dataset folder with no .arrow files");
        List<Example> out = new ArrayList<>();
        for (Path f : files) out.addAll(readArrowRows(f, defaultSplit));
        return out;
    }

    /**
     * The rows of an Arrow table that is not a limactl example file: an IPC stream (Hugging Face
     * datasets) or IPC file, each row read as the JSON object of its columns.
     */
    public static List<Example> readArrowRows(Path path, String defaultSplit) {
        List<JsonNode> rows = new ArrayList<>();
        try (BufferAllocator alloc = ArrowMemory.allocator()) {
            boolean file = isIpcFile(path);
            try (FileChannel ch = FileChannel.open(path, StandardOpenOption.READ);
                 ArrowReader reader = file ? new org.apache.arrow.vector.ipc.ArrowFileReader(ch, alloc)
                         : new ArrowStreamReader(java.nio.channels.Channels.newInputStream(ch), alloc)) {
                VectorSchemaRoot root = reader.getVectorSchemaRoot();
                while (reader.loadNextBatch()) {
                    for (int r = 0; r < root.getRowCount(); r++) {
                        com.fasterxml.jackson.databind.node.ObjectNode o = JSON.createObjectNode();
                        for (FieldVector v : root.getFieldVectors()) o.set(v.getName(), JSON.valueToTree(v.getObject(r)));
                        rows.add(o);
                    }
                }
            }
        } catch (NoSuchFileException e) {
            throw new DataFormatException("data file " + path + " does not exist", e);
        } catch (IOException | RuntimeException e) {
            if (e instanceof DataFormatException || e instanceof ArrowMemory.NotOpened) throw (RuntimeException) e;
            throw new DataFormatException(path + ": not a readable Arrow table: " + e.getMessage(), e);
        }
        return rows(path, rows.iterator(), "row ", defaultSplit);
    }

    /** An Arrow IPC file starts with "ARROW1"; a stream does not. */
    static boolean isIpcFile(Path path) throws IOException {
        try (InputStream in = Files.newInputStream(path)) {
            byte[] head = in.readNBytes(6);
            return new String(head, java.nio.charset.StandardCharsets.US_ASCII).equals("ARROW1");
        }
    }
}
