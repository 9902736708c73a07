import HTTPTypes

extension HTTPFields {
    /// The values of `names`, in their order, read in one pass (the subscript builds an index of the fields, and
    /// joins repeated ones, for each lookup); nil when one of `names` is repeated or `refused` is present. What a
    /// request answered without the router reads its headers with: anything unusual is left to the router.
    func singleValues(of names: [HTTPField.Name], unlessPresent refused: HTTPField.Name) -> [String?]? {
        var values = [String?](repeating: nil, count: names.count)
        for field in self {
            if field.name == refused { return nil }
            guard let index = names.firstIndex(of: field.name) else { continue }
            guard values[index] == nil else { return nil }
            values[index] = field.value
        }
        return values
    }
}
