package dev.limactl.data;

import java.util.List;
import org.apache.arrow.vector.types.pojo.ArrowType;
import org.apache.arrow.vector.types.pojo.Field;
import org.apache.arrow.vector.types.pojo.FieldType;
import org.apache.arrow.vector.types.pojo.Schema;

/**
 * The Arrow schema of an example file (one file per split):
 * <pre>
 *   id          utf8, not null
 *   source      utf8, not null
 *   split       utf8, not null
 *   turns       list&lt;struct&lt;role: utf8, text: utf8&gt;&gt;, not null
 *   provenance  map&lt;utf8, utf8&gt;, not null (may be empty)
 * </pre>
 * Schema metadata {@code limactl.schema} = {@value #VERSION}.
 */
public final class ExampleSchema {
    public static final String VERSION = "examples/1";
    public static final String METADATA_KEY = "limactl.schema";

    private ExampleSchema() {}

    public static Schema schema() {
        FieldType utf8 = FieldType.notNullable(ArrowType.Utf8.INSTANCE);
        Field role = new Field("role", utf8, null);
        Field text = new Field("text", utf8, null);
        Field turn = new Field("turn", FieldType.notNullable(ArrowType.Struct.INSTANCE), List.of(role, text));
        Field turns = new Field("turns", FieldType.notNullable(ArrowType.List.INSTANCE), List.of(turn));
        Field entry = new Field("entries", FieldType.notNullable(ArrowType.Struct.INSTANCE),
                List.of(new Field("key", utf8, null), new Field("value", FieldType.nullable(ArrowType.Utf8.INSTANCE), null)));
        Field provenance = new Field("provenance", FieldType.notNullable(new ArrowType.Map(false)), List.of(entry));
        return new Schema(List.of(new Field("id", utf8, null), new Field("source", utf8, null),
                new Field("split", utf8, null), turns, provenance), java.util.Map.of(METADATA_KEY, VERSION));
    }
}
