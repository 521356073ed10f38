package dev.limactl.data;

import java.nio.file.Path;
import java.util.List;

/**
 * Reads an example file by its kind: {@code .jsonl} (LIMA, ShareGPT, chat/OpenAI messages, Alpaca), {@code .json} (an array
 * of those), {@code .arrow} (limactl's example file, or any Arrow table with those columns), {@code .parquet} (a table with
 * those columns, as Hugging Face publishes datasets) or a Hugging Face datasets folder.
 */
public final class ExampleFiles {
    private ExampleFiles() {}

    public static List<Example> read(Path path, String defaultSplit) {
        String name = path.getFileName().toString();
        if (ForeignExamples.isHfDataset(path)) return ForeignExamples.readHfDataset(path, defaultSplit);
        if (name.endsWith(".arrow")) {
            // limactl's own example files carry their schema version; any other Arrow table is read by its columns
            if (ArrowExamples.isExampleFile(path)) return ArrowExamples.read(path);
            return ForeignExamples.readArrowRows(path, defaultSplit);
        }
        if (name.endsWith(".jsonl")) return JsonlExamples.read(path, defaultSplit);
        if (name.endsWith(".json")) return ForeignExamples.readJsonArray(path, defaultSplit);
        if (ParquetExamples.isParquet(path)) return ParquetExamples.read(path, defaultSplit);
        throw new DataFormatException(path + ": unknown data file type (expected .jsonl, .json, .arrow, .parquet or a Hugging Face datasets folder)");
    }
}
