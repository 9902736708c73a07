/// One row of a result; every value is the server's text form, `nil` for SQL NULL.
public struct PostgresRow: Sendable {
    /// The result's column names, in order.
    public let columns: [String]
    /// The row's values, in column order.
    public let values: [String?]

    init(columns: [String], values: [String?]) {
        self.columns = columns
        self.values = values
    }

    /// The value of the first column with this name; `nil` for NULL or if there is no such column.
    public subscript(_ column: String) -> String? {
        guard let index = columns.firstIndex(of: column) else { return nil }
        return values[index]
    }

    /// The value at this column position; `nil` for NULL or if the position is out of range.
    public subscript(_ index: Int) -> String? {
        values.indices.contains(index) ? values[index] : nil
    }
}

/// The outcome of one statement.
public struct PostgresResult: Sendable {
    public let columns: [String]
    public let rows: [PostgresRow]
    /// Rows inserted, updated, deleted, selected, … as reported by the command tag (`PQcmdTuples`); 0 when the
    /// command reports none.
    public let affectedRows: Int

    init(columns: [String], rows: [PostgresRow], affectedRows: Int) {
        self.columns = columns
        self.rows = rows
        self.affectedRows = affectedRows
    }
}
